// The seed's old daily backup, as it ran: list a table with the JS SDK's listEntities() and keep
// JSON.stringify(entities, null, 2). Prints the blob body on stdout and the blob name it would
// have had (<table>-<ISO time with ':' and '.' replaced by '-'>.json) on stderr.
// Usage: node legacy_backup.cjs <connection string> <table> [sdk package, default @azure/data-tables] [ISO time]
const [given, table, sdk = "@azure/data-tables"] = process.argv.slice(2);
// Early SDK versions read an empty last field from a trailing ";" and fail.
const connectionString = given.replace(/;+$/, "");
const { TableClient } = require(sdk);
// The old script named the blob by the time it ran; a test passes that time as a fourth argument.
const at = process.argv[5] ? new Date(process.argv[5]) : new Date();

async function main() {
  const client = TableClient.fromConnectionString(connectionString, table, { allowInsecureConnection: true });
  const entities = [];
  for await (const entity of client.listEntities()) {
    entities.push(entity);
  }
  process.stdout.write(JSON.stringify(entities, null, 2));
  process.stderr.write(`${table}-${at.toISOString().replace(/[:.]/g, "-")}.json\n`);
}

main().catch((error) => {
  process.stderr.write(`${error}\n`);
  process.exit(1);
});
