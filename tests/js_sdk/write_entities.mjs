// Writes entities with the Azure Tables JS SDK, as a JavaScript application would.
// stdin: {"connectionString", "table", "single": [entity...], "batch": [entity...]}, where JSON
// escapes such as "\ud800" carry strings JavaScript holds but UTF-8 cannot (lone surrogates).
// "single" entities are created one request each, "batch" ones in one transaction.
import { TableClient } from "@azure/data-tables";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const spec = JSON.parse(input);
const client = TableClient.fromConnectionString(spec.connectionString, spec.table, {
  allowInsecureConnection: true,
});
await client.createTable();
for (const entity of spec.single ?? []) await client.createEntity(entity);
if (spec.batch?.length) await client.submitTransaction(spec.batch.map((entity) => ["create", entity]));
