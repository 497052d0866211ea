import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { createConnection, type Connection, type RowDataPacket } from 'mysql2/promise';
import { testServers, uniqueName } from '../support/env';

// Proves the set-up every integration suite relies on (test/support/global-setup.ts): the
// servers answer, JetStream is on and stores messages, and the test database is writable.
describe('integration servers', () => {
  const servers = testServers();

  describe('NATS', () => {
    let nc: NatsConnection;
    beforeAll(async () => {
      nc = await connect({ servers: servers.natsUrl });
    });
    afterAll(() => nc.close());

    it('has JetStream enabled and stores a message', async () => {
      const jsm = await jetstreamManager(nc);
      const account = await jsm.getAccountInfo();
      expect(account.limits).toBeDefined();

      const name = uniqueName('SETUP');
      await jsm.streams.add({ name, subjects: [`${name}.>`] });
      try {
        const ack = await jetstream(nc).publish(`${name}.ping`, 'hello');
        expect(ack).toMatchObject({ stream: name, seq: 1, duplicate: false });
      } finally {
        await jsm.streams.delete(name);
      }
    });
  });

  describe('MySQL', () => {
    let db: Connection;
    beforeAll(async () => {
      db = await createConnection(servers.mysqlUrl);
    });
    afterAll(() => db.end());

    it('answers a query', async () => {
      const [rows] = await db.query<RowDataPacket[]>('SELECT 1 AS one');
      expect(rows).toEqual([{ one: 1 }]);
    });

    it('lets root create tables in tidemark_test', async () => {
      const table = uniqueName('setup_');
      await db.query(`CREATE TABLE ${table} (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)`);
      try {
        await db.query(`INSERT INTO ${table} (id, name) VALUES (?, ?)`, [1, 'tidemark']);
        const [rows] = await db.query<RowDataPacket[]>(
          `SELECT DATABASE() AS db, name FROM ${table}`,
        );
        expect(rows).toEqual([{ db: 'tidemark_test', name: 'tidemark' }]);
      } finally {
        await db.query(`DROP TABLE ${table}`);
      }
    });
  });
});
