/**
 * The OpenAPI 3.1 description of the management API, served at /api/openapi.json. A test checks
 * it against the routes http.ts serves: every route is described, every described route answers.
 */

const error = { $ref: '#/components/responses/Error' };
const json = (schema: object, description: string) => ({ description, content: { 'application/json': { schema } } });
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const nameParameter = { name: 'name', in: 'path', required: true, description: 'the stream\'s name', schema: { type: 'string' } };
/** A stream definition as in the config file's `streams:`, as JSON or YAML. */
const definitionBody = {
  required: true,
  description: 'one stream as under `streams:` in the config file (docs/configuration.md), as JSON or YAML',
  content: { 'application/json': { schema: ref('StreamDefinition') }, 'application/yaml': { schema: ref('StreamDefinition') } },
};
const changeResponses = {
  '400': { ...json(ref('Invalid'), 'the definition is invalid: each error with its line and column in the submitted text') },
  '403': error,
};

/** What a running stream reports, in its summary and in its detail alike. */
const streamRun = {
  deployed: { type: 'boolean' },
  readings_in: { type: 'integer' },
  readings_out: { type: 'integer' },
  errors: { type: 'integer' },
  counters: { type: 'object', additionalProperties: { type: 'integer' } },
};

export const OPENAPI = {
  openapi: '3.1.0',
  info: {
    title: 'edge-agent management API',
    version: '1',
    description:
      'Streams, devices and the outbox of one gateway. With agent.http_token every request needs "Authorization: Bearer <token>"; ' +
      'whatever changes something needs it even on loopback (403 when no token is configured). A request whose Host is not the ' +
      "API's address, or whose Origin is another site, is refused (403).",
  },
  security: [{ bearer: [] }],
  paths: {
    '/': { get: { summary: 'the status page', security: [], responses: { '200': { description: 'HTML', content: { 'text/html': {} } } } } },
    '/index.html': { get: { summary: 'the status page', security: [], responses: { '200': { description: 'HTML', content: { 'text/html': {} } } } } },
    '/lib/uPlot.iife.min.js': { get: { summary: "the status page's chart library (uPlot, from node_modules)", security: [], responses: { '200': { description: 'JavaScript', content: { 'text/javascript': {} } } } } },
    '/lib/uPlot.min.css': { get: { summary: "the chart library's style sheet", security: [], responses: { '200': { description: 'CSS', content: { 'text/css': {} } } } } },
    '/metrics': { get: { summary: 'Prometheus metrics', responses: { '200': { description: 'the text exposition format', content: { 'text/plain': {} } }, '401': error } } },
    '/api/streams': {
      get: { summary: 'every stream with its state and counters', responses: { '200': json({ type: 'array', items: ref('StreamStatus') }, 'the streams') } },
      post: {
        summary: 'creates a stream: written to the config file (the previous one kept as .bak) and started',
        requestBody: definitionBody,
        responses: { '201': json(ref('StreamDetail'), 'created and running'), ...changeResponses, '409': error },
      },
    },
    '/api/streams/{name}': {
      parameters: [nameParameter],
      get: { summary: 'one stream: its definition as written in the config file, its state and counters', responses: { '200': json(ref('StreamDetail'), 'the stream'), '404': error } },
      put: {
        summary: 'replaces the stream\'s definition (in the config file too); it restarts with it',
        requestBody: definitionBody,
        responses: { '200': json(ref('StreamDetail'), 'replaced and running'), ...changeResponses, '404': error },
      },
      delete: {
        summary: 'deletes the stream (from the config file too); what it queued upstream stays and is delivered',
        responses: { '204': { description: 'deleted' }, '403': error, '404': error },
      },
    },
    '/api/streams/{name}/instances': {
      parameters: [nameParameter],
      get: { summary: 'each step of the running stream', responses: { '200': json(ref('Instances'), 'the steps'), '404': error } },
    },
    '/api/streams/{name}/deploy': {
      parameters: [nameParameter],
      post: { summary: 'feeds the stream again', responses: { '200': json(ref('Deployed'), 'deployed'), '403': error, '404': error } },
    },
    '/api/streams/{name}/undeploy': {
      parameters: [nameParameter],
      post: {
        summary: 'stops feeding the stream (definition, state and queued records stay) until deployed, restarted or changed',
        responses: { '200': json(ref('Deployed'), 'undeployed'), '403': error, '404': error },
      },
    },
    '/api/apps': { get: { summary: 'every source, step and sink type with its parameters (from the config schema)', responses: { '200': json({ type: 'array', items: ref('App') }, 'the apps') } } },
    '/api/devices': { get: { summary: 'each device with the latest sample of each point and its last good value', responses: { '200': json({ type: 'array', items: { type: 'object' } }, 'the devices') } } },
    '/api/outbox': { get: { summary: 'the outbox per upstream', responses: { '200': json({ type: 'object' }, 'the outbox') } } },
    '/api/config': { get: { summary: 'the running config: agent id, version, file, when applied', responses: { '200': json({ type: 'object' }, 'the config') } } },
    '/api/events': { get: { summary: 'the last events sent upstream, oldest first', responses: { '200': json({ type: 'array', items: { type: 'object' } }, 'the events') } } },
    '/api/trends': {
      get: {
        summary: 'what the status page plots, in one answer: each point and stream output over the span, the outbox per upstream, the events',
        parameters: [
          { name: 'minutes', in: 'query', required: false, schema: { type: 'number', exclusiveMinimum: 0 }, description: 'how far back (at most the 15 minutes kept)' },
          { name: 'since', in: 'query', required: false, schema: { type: 'number' }, description: "the previous answer's `now` (ms): only the slots written since then, whatever their time" },
        ],
        responses: { '200': json({ type: 'object' }, 'the trends') },
      },
    },
    '/api/graph': { get: { summary: 'each stream as source, steps and sinks (actions with their `on` edge), with its counts', responses: { '200': json({ type: 'array', items: { type: 'object' } }, 'the streams') } } },
    '/api/openapi.json': { get: { summary: 'this description', responses: { '200': json({ type: 'object' }, 'OpenAPI 3.1') } } },
  },
  components: {
    securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'agent.http_token' } },
    responses: { Error: json({ type: 'object', required: ['error'], properties: { error: { type: 'string' } } }, 'what went wrong') },
    schemas: {
      StreamDefinition: {
        type: 'object',
        required: ['name', 'from', 'to'],
        properties: { name: { type: 'string' }, from: { type: 'object' }, steps: { type: 'array', items: { type: 'object' } }, to: { type: 'array' } },
      },
      StreamStatus: {
        type: 'object',
        properties: {
          name: { type: 'string' },
          from: { type: 'object' },
          steps: { type: 'array', items: { type: 'string' } },
          to: { type: 'array', items: { type: 'string' } },
          ...streamRun,
        },
      },
      StreamDetail: {
        type: 'object',
        properties: {
          name: { type: 'string' },
          definition: ref('StreamDefinition'),
          ...streamRun,
        },
      },
      Instances: {
        type: 'object',
        properties: {
          name: { type: 'string' },
          deployed: { type: 'boolean' },
          steps: {
            type: 'array',
            items: {
              type: 'object',
              properties: {
                step: { type: 'integer' },
                operator: { type: 'string' },
                readings_in: { type: 'integer' },
                counters: { type: 'object', additionalProperties: { type: 'integer' } },
                state_keys: { type: 'integer' },
                last_active: { type: ['integer', 'null'], description: 'epoch ms, to the second' },
              },
            },
          },
        },
      },
      Deployed: { type: 'object', properties: { name: { type: 'string' }, deployed: { type: 'boolean' } } },
      App: {
        type: 'object',
        properties: {
          type: { enum: ['source', 'step', 'sink'] },
          name: { type: 'string' },
          parameters: {
            type: 'array',
            items: { type: 'object', properties: { name: { type: 'string' }, required: { type: 'boolean' }, default: {}, schema: { type: 'object' } } },
          },
          schema: { type: 'object' },
        },
      },
      Invalid: {
        type: 'object',
        properties: {
          error: { type: 'string' },
          issues: {
            type: 'array',
            items: { type: 'object', properties: { line: { type: 'integer' }, col: { type: 'integer' }, path: { type: 'string' }, message: { type: 'string' } } },
          },
        },
      },
    },
  },
};
