import type { Logger } from 'pino';
import { Agent } from './agent/agent.js';
import { releaseConfigValidator } from './config/load.js';
import { startManagement, type Management } from './manage/index.js';

/**
 * An agent with its management (REST API, metrics, status page, remote config), which follows
 * every applied config and stops first. The one place the two are wired together.
 * `overrides.http` (the command line's) replaces agent.http.
 */
export async function startAgent(file: string, log: Logger, env: NodeJS.ProcessEnv = process.env, overrides: { http?: string } = {}): Promise<Agent> {
  let management: Management | undefined;
  return Agent.start(file, log, env, {
    async applied(agent, config, strict) {
      // `run --http ADDR` wins over agent.http in every config applied
      const effective = overrides.http === undefined ? config : { ...config, agent: { ...config.agent, http: overrides.http } };
      management = await startManagement(agent, effective, management, strict, log);
      // the config is read: a running agent need not hold the compiled schema (see load.ts)
      releaseConfigValidator();
    },
    async stopping() {
      await management?.close();
      management = undefined;
    },
  });
}
