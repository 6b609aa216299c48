import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** Reads an Ed25519 key (PEM) from a file; throws a message naming the file. */
export function readEd25519Key(file: string, kind: 'public' | 'private'): KeyObject {
  const pem = readFileSync(file);
  const key = kind === 'public' ? createPublicKey(pem) : createPrivateKey(pem);
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${file} holds a ${key.asymmetricKeyType} key, not an Ed25519 one`);
  return key;
}

/** An agent id as the config schema allows it: no line break can hide in the signed header. */
export const AGENT_ID = /^[A-Za-z0-9_.{}-]+$/;

/**
 * The bytes a push's signature covers: a header naming the format, the gateway it is for and
 * the agent id it may give that gateway (empty: the one it has), then the config text as it
 * is. A signature over a config alone (the first format) never verifies as one of these.
 */
export function pushMessage(target: string, newId: string | undefined, config: string): Buffer {
  return Buffer.from(`edge-agent config push 2\ntarget: ${target}\nnew_id: ${newId ?? ''}\n\n${config}`, 'utf8');
}

/**
 * A config push for the gateway `target`: `{"target", "new_id"?, "config", "signature"}`.
 * `newId`: the push renames the gateway to it (the config's agent.id must then say so).
 */
export function signedPush(configText: string, privateKey: KeyObject, target: string, newId?: string): string {
  for (const id of [target, newId]) if (id !== undefined && !AGENT_ID.test(id)) throw new Error(`"${id}" is not an agent id (letters, digits, _ . - { })`);
  const signature = sign(null, pushMessage(target, newId, configText), privateKey).toString('base64');
  return JSON.stringify({ target, ...(newId === undefined ? {} : { new_id: newId }), config: configText, signature });
}

/** Whether `signature` (base64) signs the push; `target` undefined: the first format, the config text alone. */
export function verifyPush(push: { target?: string; new_id?: string; config: string; signature: string }, publicKey: KeyObject): boolean {
  const bytes = push.target === undefined ? Buffer.from(push.config, 'utf8') : pushMessage(push.target, push.new_id, push.config);
  return verify(null, bytes, publicKey, Buffer.from(push.signature, 'base64'));
}
