import { readFileSync } from 'node:fs';
import path from 'node:path';
import { FailureCode, failureCodes, isFailureCode, isRetryable } from './failure-codes';

/** The rows of the first table under README's "## Failure codes": `[code, retryable, meaning]`. */
function readmeRows(): string[][] {
  const readme = readFileSync(path.join(__dirname, '..', '..', '..', 'README.md'), 'utf8');
  const section = readme.split(/^## Failure codes$/m)[1]?.split(/^## /m)[0] ?? '';
  return section
    .split('\n')
    .filter((line) => line.startsWith('|'))
    .slice(2) // the header and its rule
    .map((line) =>
      line
        .slice(1, -1)
        .split('|')
        .map((cell) => cell.trim()),
    );
}

describe('FailureCode', () => {
  it("is README's table of failure codes, row by row (edit both)", () => {
    const rows = failureCodes.map((code) => [
      `\`${code}\``,
      FailureCode[code].retryable ? 'yes' : 'no',
      FailureCode[code].meaning,
    ]);
    expect(readmeRows()).toEqual(rows);
  });

  it('knows its own codes only', () => {
    expect(isFailureCode('LEASE_EXPIRED')).toBe(true);
    expect(isFailureCode('LATE')).toBe(false);
    expect(isFailureCode('toString')).toBe(false);
    expect(isRetryable('LEASE_EXPIRED')).toBe(true);
    expect(isRetryable('FULL_BACKUP_REQUIRED')).toBe(false);
  });
});
