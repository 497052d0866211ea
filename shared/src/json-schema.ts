import { z } from 'zod';
import { EnvelopeSchema, eventVersions, type EventType } from './events/envelope';

/**
 * JSON Schema (draft 2020-12) of each event version, envelope included, for publishers in
 * other languages. Generated from the zod schemas, so the two cannot disagree; the files in
 * `shared/schemas/` are written by `npm run schemas -w @tidemark/shared` and checked by a test.
 */
export function eventJsonSchemas(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const type of Object.keys(eventVersions) as EventType[]) {
    const versions: Record<number, z.ZodType> = eventVersions[type];
    for (const [version, data] of Object.entries(versions)) {
      const schema = EnvelopeSchema.extend({
        type: z.literal(type),
        version: z.literal(Number(version)),
        data,
      });
      out[`${type}.v${version}.json`] = {
        $id: `urn:tidemark:event:${type}:v${version}`,
        title: `${type} v${version}`,
        ...z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }),
      };
    }
  }
  return out;
}
