// The test Kafka broker (test/support/kafka-broker.ts) in a process of its own, so that the
// benchmark's agent side has its event loop to itself. Prints "port N" once listening.
import { KafkaTestBroker } from '../../test/support/kafka-broker.js';

const broker = await KafkaTestBroker.start({ partitions: 3 });
console.log(`port ${broker.port}`);
process.on('SIGTERM', () => broker.stop().then(() => process.exit(0)));
