import type { Logger } from 'pino';
import { Agent } from './agent/agent.js';
import { releaseConfigValidator } from './config/load.js';
import { startManagement, type Management } from './manage/index.js';

/**
 * An agent with its management (REST API, metrics, status page, remote config), which follows
 * every applied config and stops first. The one place the two are wired together.
 */
export async function startAgent(file: string, log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<Agent> {
  let management: Management | undefined;
  return Agent.start(file, log, env, {
    async applied(agent, config, strict) {
      management = await startManagement(agent, config, management, strict, log);
      // the config is read: a running agent need not hold the compiled schema (see load.ts)
      releaseConfigValidator();
    },
    async stopping() {
      await management?.close();
      management = undefined;
    },
  });
}
