import 'reflect-metadata';
import { DataSource } from 'typeorm';
import { entities } from './entities';
import { InitialSchema1763800000000 } from './migrations/1763800000000-initial-schema';
import { Chains1764600000000 } from './migrations/1764600000000-chains';

export const migrations = [InitialSchema1763800000000, Chains1764600000000];

/**
 * The ledger's database: MySQL 8 or MariaDB 10.11 through mysql2. The schema comes only from
 * migrations (never synchronised); dates are stored in UTC.
 */
export function createDataSource(url: string, poolSize = 8): DataSource {
  return new DataSource({
    type: 'mysql',
    url,
    entities,
    migrations,
    migrationsTableName: 'ledger_migrations',
    synchronize: false,
    timezone: 'Z',
    charset: 'utf8mb4',
    supportBigNumbers: true,
    bigNumberStrings: true,
    poolSize,
    logging: false,
  });
}

/** Creates the database named in the URL if it is missing (the ledger owns its database). */
export async function ensureDatabase(url: string): Promise<void> {
  const u = new URL(url);
  const name = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (!/^[A-Za-z0-9_]+$/.test(name)) {
    throw new RangeError(
      `database name ${JSON.stringify(name)} must hold only letters, digits and "_"`,
    );
  }
  u.pathname = '/';
  const ds = new DataSource({ type: 'mysql', url: u.toString(), logging: false });
  await ds.initialize();
  try {
    await ds.query(
      `CREATE DATABASE IF NOT EXISTS \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`,
    );
  } finally {
    await ds.destroy();
  }
}
