import { api } from '@tidemark/shared';

/** What the hub adds to a contract route in its OpenAPI document. */
export interface RouteDoc {
  tags: string[];
  summary: string;
  description?: string;
  security?: never[];
}

type ContractRoute<R extends api.Route> = {
  method: R['method'];
  url: R['path'];
  schema: RouteDoc &
    Omit<R, 'method' | 'path' | 'response' | 'errors'> & {
      response: R['response'] & Record<R['errors'][number], typeof api.ErrorBody>;
    };
};

/**
 * A route of the shared REST contract in the form `app.route` takes: its method, url and
 * schemas, with `ErrorBody` for each error status it may answer, and the hub's words about it.
 * Spread it and add the handler; the schemas type the handler's request and reply.
 */
export function contractRoute<R extends api.Route>(route: R, doc: RouteDoc): ContractRoute<R> {
  const { method, path, response, errors, ...request } = route;
  const errorAnswers = Object.fromEntries(errors.map((status) => [status, api.ErrorBody]));
  // TypeScript widens a spread generic to its constraint: the annotation keeps R's own types.
  return {
    method,
    url: path,
    schema: { ...doc, ...request, response: { ...response, ...errorAnswers } },
  } as ContractRoute<R>;
}
