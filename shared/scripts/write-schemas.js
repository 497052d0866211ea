// Writes shared/schemas/<type>.v<version>.json from the compiled zod schemas.
const fs = require('node:fs');
const path = require('node:path');
const { eventJsonSchemas } = require('../dist/json-schema.js');

const dir = path.join(__dirname, '..', 'schemas');
fs.mkdirSync(dir, { recursive: true });
for (const [file, schema] of Object.entries(eventJsonSchemas())) {
  fs.writeFileSync(path.join(dir, file), `${JSON.stringify(schema, null, 2)}\n`);
  console.log(`wrote schemas/${file}`);
}
