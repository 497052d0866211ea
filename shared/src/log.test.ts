import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { createLogger, forJob, redactUrl } from './log';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { lines, log: createLogger('test', 'info', stream) };
}

describe('logger', () => {
  it('puts the job id on every line of a job logger', () => {
    const { lines, log } = capture();
    const jlog = forJob(log, 'backup-1');
    jlog.info('one');
    jlog.warn({ disk: 'd0' }, 'two');
    expect(lines.map((l) => [l.jobId, l.service, l.msg])).toEqual([
      ['backup-1', 'test', 'one'],
      ['backup-1', 'test', 'two'],
    ]);
  });

  it('never writes a password, token or authorization header', () => {
    const { lines, log } = capture();
    const secret = randomBytes(8).toString('hex');
    log.info(
      {
        password: secret,
        config: { token: secret },
        req: { headers: { authorization: `Bearer ${secret}` } },
      },
      'x',
    );
    expect(lines).toHaveLength(1);
    expect(JSON.stringify(lines)).not.toContain(secret);
  });

  it('redacts the password of a URL', () => {
    expect(redactUrl('mysql://root:s3cret@db:3306/tidemark')).toBe(
      'mysql://root:***@db:3306/tidemark',
    );
    expect(redactUrl('nats://127.0.0.1:4222')).toBe('nats://127.0.0.1:4222');
  });
});
