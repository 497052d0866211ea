import { readFileSync } from 'node:fs';
import path from 'node:path';
import { eventJsonSchemas } from './json-schema';

describe('published JSON Schemas', () => {
  it.each(Object.entries(eventJsonSchemas()))(
    '%s matches the zod schema (run `npm run schemas -w @tidemark/shared`)',
    (file, schema) => {
      const committed = JSON.parse(
        readFileSync(path.join(__dirname, '..', 'schemas', file), 'utf8'),
      );
      expect(committed).toEqual(schema);
    },
  );

  it('names every required field of backup.completed', () => {
    const schema = eventJsonSchemas()['backup.completed.v1.json'] as {
      properties: { data: { required: string[] } };
    };
    expect(schema.properties.data.required).toEqual(
      expect.arrayContaining(['vmName', 'backupType', 'repositoryId', 'disks', 'bytesTransferred']),
    );
  });
});
