import { createPrivateKey, createPublicKey, sign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** Reads an Ed25519 key (PEM) from a file; throws a message naming the file. */
export function readEd25519Key(file: string, kind: 'public' | 'private'): KeyObject {
  const pem = readFileSync(file);
  const key = kind === 'public' ? createPublicKey(pem) : createPrivateKey(pem);
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${file} holds a ${key.asymmetricKeyType} key, not an Ed25519 one`);
  return key;
}

/** A config push as the agent takes it: the text as it is, and the signature of its UTF-8 bytes. */
export function signedPush(configText: string, privateKey: KeyObject): string {
  const signature = sign(null, Buffer.from(configText, 'utf8'), privateKey).toString('base64');
  return JSON.stringify({ config: configText, signature });
}
