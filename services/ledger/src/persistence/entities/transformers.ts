import type { ValueTransformer } from 'typeorm';

/** BIGINT columns come back from mysql2 as strings; byte counts fit a JS number (< 2^53). */
export const bigintNumber: ValueTransformer = {
  to: (value: number | null | undefined) => value,
  from: (value: string | number | null) => (value === null ? null : Number(value)),
};
