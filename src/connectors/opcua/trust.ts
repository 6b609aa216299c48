import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { OPCUACertificateManager, StatusCodes, type StatusCode } from 'node-opcua';

/**
 * The agent's application certificate store (data_dir/opcua/pki, shared by all OPC UA devices:
 * one client certificate for the gateway) with trust decisions of one device. A server
 * certificate is trusted when the shared store trusts it (trust_dir, or put there by the
 * operator) or when it is pinned for this device in data_dir/opcua/devices/<id>/trusted. With
 * trust on first use, the first certificate a device sees is pinned for that device only, so a
 * second TOFU device added later is trusted on its own first use, and neither accepts a changed
 * certificate afterwards. A refused certificate goes to the device's rejected/ folder, where an
 * operator can move it to trusted/ to accept it.
 */
export class DeviceTrust extends OPCUACertificateManager {
  private readonly trustedDir: string;
  private readonly rejectedDir: string;

  constructor(
    pki: string,
    deviceDir: string,
    private readonly device: string,
    private readonly trustOnFirstUse: boolean,
    private readonly log: Logger,
    legacyPins: Buffer[],
  ) {
    super({ rootFolder: pki, automaticallyAcceptUnknownCertificate: false });
    this.trustedDir = join(deviceDir, 'trusted');
    this.rejectedDir = join(deviceDir, 'rejected');
    const fresh = !existsSync(this.trustedDir);
    mkdirSync(this.trustedDir, { recursive: true });
    mkdirSync(this.rejectedDir, { recursive: true });
    // An install from before per-device trust kept the TOFU certificate in the shared store: a
    // device that existed then keeps refusing any other, as it did.
    if (fresh && trustOnFirstUse) for (const der of legacyPins) this.pin(this.trustedDir, der);
  }

  /** node-opcua asks this about the server certificate before it opens a secure channel. */
  override checkCertificate(chain: Buffer | Buffer[], callback?: (err: Error | null, status?: StatusCode) => void): never {
    const decided = this.decide(Buffer.concat(Array.isArray(chain) ? chain : [chain]));
    if (callback) decided.then((status) => callback(null, status), (err: Error) => callback(err));
    return decided as never;
  }

  private async decide(certificate: Buffer): Promise<StatusCode> {
    const status = await this.verifyCertificate(certificate, { acceptCertificateWithValidIssuerChain: true });
    if (status === 'Good') return StatusCodes.Good;
    // expired, revoked, badly signed: never trusted, whatever the pins say
    if (status !== 'BadCertificateUntrusted') return (StatusCodes as unknown as Record<string, StatusCode>)[status] ?? StatusCodes.BadCertificateInvalid;
    const fingerprint = fingerprintOf(certificate);
    const pinned = readdirSync(this.trustedDir);
    if (pinned.some((file) => pinFingerprint(join(this.trustedDir, file)) === fingerprint)) return StatusCodes.Good;
    if (this.trustOnFirstUse && pinned.length === 0) {
      this.pin(this.trustedDir, certificate);
      this.log.info({ device: this.device, fingerprint }, `device ${this.device}: server certificate ${fingerprint} trusted on first use`);
      return StatusCodes.Good;
    }
    // said once per certificate: the refusal itself is logged once per episode by the connector
    if (this.pin(this.rejectedDir, certificate)) {
      this.log.warn(
        { device: this.device, fingerprint },
        `device ${this.device}: server certificate ${fingerprint} is not trusted for this device; it is in ${this.rejectedDir}: move it to ${this.trustedDir} to accept it`,
      );
    }
    return StatusCodes.BadCertificateUntrusted;
  }

  /** Keeps the certificate in `folder`; true when it was not there yet. */
  private pin(folder: string, certificate: Buffer): boolean {
    const file = join(folder, `${fingerprintOf(certificate)}.der`);
    if (existsSync(file)) return false;
    writeFileSync(file, certificate);
    return true;
  }
}

/** SHA-256 of the DER certificate, as hex. */
function fingerprintOf(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex');
}

function pinFingerprint(file: string): string | undefined {
  try {
    return fingerprintOf(new X509Certificate(readFileSync(file)).raw);
  } catch {
    return undefined; // not a certificate: ignored
  }
}

const legacyByDataDir = new Map<string, Buffer[]>();

/**
 * The certificates of the shared trusted folder when data_dir/opcua/devices did not exist yet
 * (an install from before per-device trust); read once per process, before any device is made.
 */
export function legacyPins(opcuaDir: string): Buffer[] {
  let pins = legacyByDataDir.get(opcuaDir);
  if (pins) return pins;
  pins = [];
  const trusted = join(opcuaDir, 'pki', 'trusted', 'certs');
  if (!existsSync(join(opcuaDir, 'devices')) && existsSync(trusted)) {
    for (const file of readdirSync(trusted)) {
      try {
        pins.push(new X509Certificate(readFileSync(join(trusted, file))).raw);
      } catch {
        // not a certificate
      }
    }
  }
  mkdirSync(join(opcuaDir, 'devices'), { recursive: true });
  legacyByDataDir.set(opcuaDir, pins);
  return pins;
}
