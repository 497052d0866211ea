import {
  cell,
  etaSeconds,
  formatBytes,
  formatDuration,
  formatFields,
  formatRate,
  formatTable,
  percent,
  secondsBetween,
} from './format';

describe('formatBytes', () => {
  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [1536, '1.5 KiB'],
    [100 * 2 ** 20, '100.0 MiB'],
    [4 * 2 ** 30, '4.0 GiB'],
    [2 ** 40 + 2 ** 39, '1.5 TiB'],
    [Number.MAX_SAFE_INTEGER, '8.0 PiB'],
  ])('%d bytes is %s', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });

  it('carries a value that rounds up to 1024 into the next unit', () => {
    expect(formatBytes(2 ** 20 - 1)).toBe('1.0 MiB');
  });

  it('shows a negative or unreadable count as "-"', () => {
    expect(formatBytes(-1)).toBe('-');
    expect(formatBytes(Number.NaN)).toBe('-');
  });

  it('formats a rate per second', () => {
    expect(formatRate(50 * 2 ** 20)).toBe('50.0 MiB/s');
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0s'],
    [44.6, '45s'],
    [59, '59s'],
    [60, '1m 00s'],
    [182, '3m 02s'],
    [3600, '1h 00m'],
    [3840, '1h 04m'],
    [86400 * 2 + 3 * 3600, '2d 03h'],
  ])('%d seconds is %s', (seconds, text) => {
    expect(formatDuration(seconds)).toBe(text);
  });

  it('shows an unknown duration as "-"', () => {
    expect(formatDuration(null)).toBe('-');
    expect(formatDuration(-5)).toBe('-');
    expect(formatDuration(Number.POSITIVE_INFINITY)).toBe('-');
  });
});

describe('progress arithmetic', () => {
  it('tells the seconds left at the current rate, or null without rate or total', () => {
    expect(etaSeconds(25, 100, 5)).toBe(15);
    expect(etaSeconds(120, 100, 5)).toBe(0);
    expect(etaSeconds(25, 100, 0)).toBeNull();
    expect(etaSeconds(25, 0, 5)).toBeNull();
  });

  it('rounds the percentage down and caps it at 100', () => {
    expect(percent(999, 1000)).toBe(99);
    expect(percent(1000, 1000)).toBe(100);
    expect(percent(2000, 1000)).toBe(100);
    expect(percent(5, 0)).toBeNull();
  });

  it('measures the seconds between two timestamps', () => {
    expect(secondsBetween('2025-01-01T00:00:00Z', '2025-01-01T00:03:02Z')).toBe(182);
    expect(secondsBetween(null, '2025-01-01T00:03:02Z')).toBeNull();
    expect(secondsBetween('2025-01-01T00:00:00Z', 'not a date')).toBeNull();
  });
});

describe('tables and fields', () => {
  it('aligns columns two spaces apart, with no trailing spaces', () => {
    const table = formatTable(
      ['ID', 'NAME', 'PATH'],
      [
        ['repo-1', 'primary', '/srv/backups'],
        ['repo-22', 'offsite', null],
      ],
    );
    expect(table.split('\n')).toEqual([
      'ID       NAME     PATH',
      'repo-1   primary  /srv/backups',
      'repo-22  offsite  -',
    ]);
  });

  it('prints the headers of an empty table', () => {
    expect(formatTable(['DISK', 'CHANGE_ID'], [])).toBe('DISK  CHANGE_ID');
  });

  it('shows null, undefined and empty cells as "-"', () => {
    expect([cell(null), cell(undefined), cell(''), cell(0), cell('x')]).toEqual([
      '-',
      '-',
      '-',
      '0',
      'x',
    ]);
  });

  it('pads field labels to one width', () => {
    expect(
      formatFields([
        ['status', 'running'],
        ['repository', 'repo-1'],
        ['policy', null],
      ]),
    ).toBe('status      running\nrepository  repo-1\npolicy      -');
  });
});
