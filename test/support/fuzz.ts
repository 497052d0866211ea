/**
 * Malformed inputs for the fuzz suite, generated from valid ones by a seeded random source so a
 * failing run can be replayed: events for the bus and bodies for the REST API. Each generator
 * names the mutation it applied, so the results say what was tried.
 */
import { rng } from './disks';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface Mutant {
  /** What was done, e.g. `wrong type at data.disks.0.diskKey`. */
  mutation: string;
  /** The bytes to send. */
  body: Buffer;
}

const HUGE = 'x'.repeat(70 * 1024);

/** The paths of every leaf and container of `value`, as dotted strings ('' = the root). */
function paths(value: Json, prefix = ''): string[] {
  const out = [prefix];
  if (Array.isArray(value)) value.forEach((v, i) => out.push(...paths(v, join(prefix, i))));
  else if (value && typeof value === 'object')
    for (const [k, v] of Object.entries(value)) out.push(...paths(v, join(prefix, k)));
  return out;
}

function join(prefix: string, key: string | number): string {
  return prefix ? `${prefix}.${key}` : String(key);
}

function clone(value: Json): Json {
  return JSON.parse(JSON.stringify(value)) as Json;
}

/** Replaces (or, with `undefined`, deletes) the value at `path`; the root cannot be deleted. */
function setAt(root: Json, path: string, next: Json | undefined): Json {
  if (path === '') return next === undefined ? {} : next;
  const keys = path.split('.');
  let parent = root as Record<string, Json> | Json[];
  for (const k of keys.slice(0, -1)) parent = (parent as Record<string, Json>)[k] as typeof parent;
  const last = keys[keys.length - 1] as string;
  if (Array.isArray(parent)) {
    if (next === undefined) parent.splice(Number(last), 1);
    else parent[Number(last)] = next;
  } else if (next === undefined) delete parent[last];
  else parent[last] = next;
  return root;
}

function getAt(root: Json, path: string): Json {
  if (path === '') return root;
  let v = root;
  for (const k of path.split('.')) v = (v as Record<string, Json>)[k] as Json;
  return v;
}

function deepNesting(depth: number): Json {
  let v: Json = 'bottom';
  for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { a: v };
  return v;
}

/** Values of the wrong kind for whatever is at a path. */
function wrongValues(current: Json): Json[] {
  const all: Json[] = [
    null,
    true,
    -1,
    1.5,
    Number.MAX_SAFE_INTEGER * 4,
    '',
    HUGE,
    '../../etc/passwd',
    'a/b',
    '\u0000',
    [],
    [1, 2],
    {},
    { nested: { deeper: 1 } },
    deepNesting(200),
  ];
  return all.filter((v) => JSON.stringify(v) !== JSON.stringify(current));
}

/**
 * One malformed variant of `valid` (a JSON document): a field of the wrong type or shape, a
 * field removed, a huge or hostile string, deep nesting, an unknown enum value, or bytes that
 * are not JSON at all. `valid` is not changed.
 */
export function mutate(valid: Json, random: () => number): Mutant {
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)] as T;
  const text = JSON.stringify(valid);
  const kind = random();
  if (kind < 0.08) {
    const cut = Math.floor(random() * text.length);
    return { mutation: 'truncated JSON', body: Buffer.from(text.slice(0, cut)) };
  }
  if (kind < 0.12) {
    const bytes = Buffer.alloc(1 + Math.floor(random() * 200));
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(random() * 256);
    return { mutation: 'random bytes', body: bytes };
  }
  if (kind < 0.15) {
    return {
      mutation: 'a JSON scalar',
      body: Buffer.from(pick(['42', '"text"', 'null', 'true', '[]'])),
    };
  }
  const doc = clone(valid);
  const path = pick(paths(doc).filter((p) => p !== ''));
  if (kind < 0.35) {
    return {
      mutation: `removed ${path}`,
      body: Buffer.from(JSON.stringify(setAt(doc, path, undefined))),
    };
  }
  if (kind < 0.45) {
    return {
      mutation: `huge body beside ${path}`,
      body: Buffer.from(JSON.stringify(setAt(doc, path, HUGE + HUGE))),
    };
  }
  const value = pick(wrongValues(getAt(doc, path)));
  const label =
    value === null
      ? 'null'
      : Array.isArray(value)
        ? 'array'
        : typeof value === 'string' && value.length > 1000
          ? 'huge string'
          : typeof value;
  return {
    mutation: `${label} at ${path}`,
    body: Buffer.from(JSON.stringify(setAt(doc, path, value))),
  };
}

/** A seeded source for `mutate`. */
export function fuzzRandom(seed: number): () => number {
  return rng(seed);
}
