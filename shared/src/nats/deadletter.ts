import { z } from 'zod';

/**
 * What the dead-letter stream holds: the original message, whole, and why it was refused.
 * Published on `dead.backup`; never consumed by a `backup.>` consumer.
 */
export const DeadLetterSchema = z.object({
  /** One line: why the event was not applied, naming the field where there is one. */
  reason: z.string(),
  /** Each failing field and what is wrong with it. */
  issues: z.array(z.object({ path: z.string(), message: z.string() })),
  /** Subject the event was published on. */
  subject: z.string(),
  /** Sequence of the original in its stream. */
  streamSequence: z.number().int(),
  /** Times the consumer had received it. */
  deliveryCount: z.number().int(),
  /** Durable consumer that refused it. */
  consumer: z.string(),
  deadAt: z.iso.datetime(),
  /** The original body: as text when it is valid UTF-8, else base64. */
  payload: z.string(),
  payloadEncoding: z.enum(['utf8', 'base64']),
  payloadBytes: z.number().int(),
  /** True only when the original was too large to republish whole beside the record. */
  payloadTruncated: z.boolean(),
  /** The event id (`Nats-Msg-Id`) when it could be read. */
  eventId: z.string().nullable(),
});
export type DeadLetter = z.output<typeof DeadLetterSchema>;

/** The largest payload copied whole into a dead letter (NATS' default max_payload is 1 MiB). */
export const MAX_DEAD_PAYLOAD_BYTES = 600 * 1024;

export function encodePayload(
  body: Uint8Array,
): Pick<DeadLetter, 'payload' | 'payloadEncoding' | 'payloadBytes' | 'payloadTruncated'> {
  const truncated = body.byteLength > MAX_DEAD_PAYLOAD_BYTES;
  const kept = Buffer.from(truncated ? body.subarray(0, MAX_DEAD_PAYLOAD_BYTES) : body);
  let text: string | null = null;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(kept);
  } catch {
    text = null;
  }
  return {
    payload: text ?? kept.toString('base64'),
    payloadEncoding: text === null ? 'base64' : 'utf8',
    payloadBytes: body.byteLength,
    payloadTruncated: truncated,
  };
}
