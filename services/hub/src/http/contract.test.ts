// The hub serves the shared REST contract and nothing of its own: its OpenAPI document, built by
// the app, must describe exactly the routes of `api.routes`, each with the contract's schemas.
// A route added outside the contract, or a schema of the hub's own in place of the contract's,
// makes the two documents differ.
import swagger from '@fastify/swagger';
import { api, createLogger } from '@tidemark/shared';
import Fastify from 'fastify';
import {
  jsonSchemaTransform,
  jsonSchemaTransformObject,
  serializerCompiler,
  validatorCompiler,
} from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Bus } from '../nats/bus';
import { buildApp } from './app';

interface Document {
  openapi: string;
  paths: Record<
    string,
    Record<string, { parameters?: unknown; requestBody?: unknown; responses: unknown }>
  >;
  components: { schemas: Record<string, unknown> };
}

async function hubDocument(): Promise<Document> {
  const log = createLogger('hub', 'silent');
  const app = await buildApp({ bus: {} as Bus, log, token: 'a-token' });
  await app.ready();
  const doc = app.swagger() as unknown as Document;
  await app.close();
  return doc;
}

/** The document of the contract alone, built here without the hub's code. */
async function contractDocument(openapi: string): Promise<Document> {
  const app = Fastify();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  await app.register(swagger, {
    openapi: { openapi },
    transform: jsonSchemaTransform,
    transformObject: jsonSchemaTransformObject,
  });
  for (const { method, path, response, errors, ...request } of Object.values(api.routes)) {
    const errorAnswers = Object.fromEntries(errors.map((status) => [status, api.ErrorBody]));
    const schema = { ...request, response: { ...response, ...errorAnswers } };
    app.route({ method, url: path, schema, handler: async () => ({}) });
  }
  await app.ready();
  const doc = app.swagger() as unknown as Document;
  await app.close();
  return doc;
}

/** What a route takes and answers, per `METHOD path`; the hub's own words left out. */
function operations(doc: Document) {
  return Object.fromEntries(
    Object.entries(doc.paths).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, op]) => [
        `${method.toUpperCase()} ${path}`,
        { parameters: op.parameters, requestBody: op.requestBody, responses: op.responses },
      ]),
    ),
  );
}

describe('the REST contract', () => {
  it("is what the hub's OpenAPI document describes, route by route", async () => {
    const hub = await hubDocument();
    const contract = await contractDocument(hub.openapi);
    expect(Object.keys(operations(hub)).sort()).toEqual(Object.keys(operations(contract)).sort());
    expect(operations(hub)).toEqual(operations(contract));
  });

  it("names in the document's components only the contract's own schemas", async () => {
    const { components } = await hubDocument();
    const contractIds = [...schemaIds(api).keys()].sort();
    // The type provider documents a schema's input as `<id>Input` beside its output `<id>`.
    const named = Object.keys(components.schemas).map((name) => name.replace(/Input$/, ''));
    expect([...new Set(named)].sort()).toEqual(contractIds);
    // zod keeps one schema per id, the last one given it: a schema of the hub's own under a
    // contract id would have replaced the contract's here, and be the one documented.
    const taken = [...schemaIds(api)].filter(
      ([id, own]) => z.globalRegistry._idmap.get(id) !== own,
    );
    expect(taken.map(([id]) => id)).toEqual([]);
  });
});

/** The schemas among a module's exports that carry an id, by id. */
function schemaIds(exports: object): Map<string, z.ZodType> {
  const ids = new Map<string, z.ZodType>();
  for (const value of Object.values(exports)) {
    const id = value instanceof z.ZodType ? z.globalRegistry.get(value)?.id : undefined;
    if (id !== undefined) ids.set(id, value);
  }
  return ids;
}
