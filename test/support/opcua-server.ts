import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataType, DataValue, OPCUACertificateManager, OPCUAServer, StatusCodes, Variant, VariantArrayType, type UAObject, type UAVariable } from 'node-opcua';
import { freePort } from './ports.js';

/**
 * A node-opcua server on a free loopback port with a few nodes of a motor, which the test can
 * change, stop and start again on the same port (and the same certificate).
 */
export class OpcuaTestServer {
  rpm = 100;
  setpoint = 0;
  count = 0;
  /** values of the typed writable nodes, by node id (Types.Int16, Types.Double, …) */
  readonly typed = new Map<string, unknown>();
  level = 1;
  private server: OPCUAServer | undefined;
  private rpmNode: UAVariable | undefined;
  private levelNode: UAVariable | undefined;
  private pki: string;

  private constructor(readonly port: number) {
    this.pki = mkdtempSync(join(tmpdir(), 'opcua-server-pki-'));
  }

  get endpoint(): string {
    return `opc.tcp://127.0.0.1:${this.port}/UA/Test`;
  }

  static async start(): Promise<OpcuaTestServer> {
    const server = new OpcuaTestServer(await freePort());
    await server.resume();
    return server;
  }

  async resume(): Promise<void> {
    const server = new OPCUAServer({
      port: this.port,
      hostname: '127.0.0.1',
      resourcePath: '/UA/Test',
      alternateHostname: ['127.0.0.1'],
      serverCertificateManager: new OPCUACertificateManager({ rootFolder: join(this.pki, 'server'), automaticallyAcceptUnknownCertificate: true }),
      userManager: { isValidUser: (user: string, password: string) => user === 'operator' && password === 's3cret' },
      userCertificateManager: new OPCUACertificateManager({ rootFolder: join(this.pki, 'users'), automaticallyAcceptUnknownCertificate: true }),
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace!;
    const ns = addressSpace.getOwnNamespace();
    const motor = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: 'Motor' });
    this.rpmNode = ns.addVariable({
      componentOf: motor,
      browseName: 'RPM',
      nodeId: 's=Motor.RPM',
      dataType: 'Double',
      accessLevel: 'CurrentRead',
      userAccessLevel: 'CurrentRead',
      value: { get: () => new Variant({ dataType: DataType.Double, value: this.rpm }) },
    });
    ns.addVariable({
      componentOf: motor,
      browseName: 'Setpoint',
      nodeId: 's=Motor.Setpoint',
      dataType: 'Double',
      accessLevel: 'CurrentRead | CurrentWrite',
      userAccessLevel: 'CurrentRead | CurrentWrite',
      value: {
        get: () => new Variant({ dataType: DataType.Double, value: this.setpoint }),
        set: (v: Variant) => {
          this.setpoint = v.value as number;
          return StatusCodes.Good;
        },
      },
    });
    ns.addVariable({
      componentOf: motor,
      browseName: 'Count',
      nodeId: 's=Motor.Count',
      dataType: 'Int16',
      accessLevel: 'CurrentRead | CurrentWrite',
      userAccessLevel: 'CurrentRead | CurrentWrite',
      value: {
        get: () => new Variant({ dataType: DataType.Int16, value: this.count }),
        set: (v: Variant) => {
          this.count = v.value as number;
          return StatusCodes.Good;
        },
      },
    });
    ns.addVariable({
      componentOf: motor,
      browseName: 'Broken',
      nodeId: 's=Motor.Broken',
      dataType: 'Double',
      value: {
        timestamped_get: () =>
          new DataValue({ value: new Variant({ dataType: DataType.Double, value: 0 }), statusCode: StatusCodes.BadSensorFailure, sourceTimestamp: new Date(), serverTimestamp: new Date() }),
      },
    });
    ns.addVariable({
      componentOf: motor,
      browseName: 'Guess',
      nodeId: 's=Motor.Guess',
      dataType: 'Double',
      value: {
        timestamped_get: () =>
          new DataValue({ value: new Variant({ dataType: DataType.Double, value: 9.5 }), statusCode: StatusCodes.UncertainLastUsableValue, sourceTimestamp: new Date(), serverTimestamp: new Date() }),
      },
    });
    const types = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: 'Types' });
    for (const [type, initial] of [
      ['Int16', 0],
      ['UInt16', 0],
      ['Byte', 0],
      ['Int32', 0],
      ['Int64', 0],
      ['Float', 0],
      ['Double', 0],
      ['String', ''],
      ['Boolean', false],
    ] as const) {
      const nodeId = `Types.${type}`;
      if (!this.typed.has(nodeId)) this.typed.set(nodeId, initial);
      ns.addVariable({
        componentOf: types,
        browseName: type,
        nodeId: `s=${nodeId}`,
        dataType: type,
        minimumSamplingInterval: 100,
        accessLevel: 'CurrentRead | CurrentWrite',
        userAccessLevel: 'CurrentRead | CurrentWrite',
        value: {
          get: () => new Variant({ dataType: DataType[type], arrayType: VariantArrayType.Scalar, value: this.typed.get(nodeId) }),
          set: (v: Variant) => {
            this.typed.set(nodeId, v.value);
            return StatusCodes.Good;
          },
        },
      });
    }
    this.tank = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: 'Tank' });
    this.addLevel();
    await server.start();
    this.server = server;
  }

  private tank: UAObject | undefined;

  /** Tank.Level, a node the test deletes and adds again (a PLC program download). */
  addLevel(): void {
    const ns = this.server?.engine.addressSpace?.getOwnNamespace() ?? this.tank!.namespace;
    this.levelNode = ns.addVariable({
      componentOf: this.tank!,
      browseName: 'Level',
      nodeId: 's=Tank.Level',
      dataType: 'Double',
      minimumSamplingInterval: 100,
      value: { get: () => new Variant({ dataType: DataType.Double, value: this.level }) },
    });
  }

  deleteLevel(): void {
    this.server!.engine.addressSpace!.deleteNode(this.levelNode!);
    this.levelNode = undefined;
  }

  /** Changes Tank.Level and tells subscribers. */
  setLevel(value: number): void {
    this.level = value;
    this.levelNode?.touchValue();
  }

  /** The folder of the server's own certificate (PEM), to be trusted by a client. */
  get certificateFolder(): string {
    return join(this.pki, 'server', 'own', 'certs');
  }

  /** The next resume() makes the server a new certificate (a replaced or impostor server). */
  renewCertificate(): void {
    this.pki = mkdtempSync(join(tmpdir(), 'opcua-server-pki-'));
  }

  /** Changes RPM and tells subscribers. */
  setRpm(value: number): void {
    this.rpm = value;
    this.rpmNode?.touchValue();
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    await server?.shutdown(0);
  }
}
