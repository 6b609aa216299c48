import pino from 'pino';

/** Quiet unless EDGE_TEST_LOG=debug (or another level) is set. */
export const testLog = pino({ level: process.env.EDGE_TEST_LOG ?? 'silent' });
