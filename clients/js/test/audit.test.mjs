// Unit checks of the message form (always), and, when tests/test_audited_client_js.py gives
// AUDITED_STEP (JSON: connectionString, table, queue, at, step), one step of changes through
// auditedTableClient against its Azurite; Python then drains the queue and checks the replay.
import { test } from "node:test";
import assert from "node:assert/strict";
import { TableClient } from "@azure/data-tables";
import { AuditClient, auditedTableClient, auditMessage, losslessEntity, messageText, nextSequence } from "../dist/index.js";

test("every EDM type, as the SDK returns it, in the writer's lossless form", () => {
  const entity = {
    partitionKey: "P", rowKey: "R", etag: "W/x", timestamp: new Date(),
    text: "a\ud800b", flag: false, small: 7, ratio: 2.5, whole: { value: "2", type: "Double" },
    nan: Number.NaN, big: 9223372036854775807n, bigObject: { value: "-9223372036854775808", type: "Int64" },
    when: new Date("2026-11-25T02:00:00.123Z"), whenText: { value: "2026-11-25T02:00:00.1234567Z", type: "DateTime" },
    id: { value: "c9da6455-213d-42c9-9a79-3e9149a57833", type: "Guid" }, blob: new Uint8Array([0, 255]),
    gone: null,
  };
  assert.deepEqual(losslessEntity(entity), {
    PartitionKey: "P", RowKey: "R", text: "a\ud800b", flag: false, small: 7,
    ratio: 2.5, "ratio@odata.type": "Edm.Double", whole: 2, "whole@odata.type": "Edm.Double",
    nan: "NaN", "nan@odata.type": "Edm.Double",
    big: "9223372036854775807", "big@odata.type": "Edm.Int64",
    bigObject: "-9223372036854775808", "bigObject@odata.type": "Edm.Int64",
    when: "2026-11-25T02:00:00.1230000Z", "when@odata.type": "Edm.DateTime",
    whenText: "2026-11-25T02:00:00.1234567Z", "whenText@odata.type": "Edm.DateTime",
    id: "c9da6455-213d-42c9-9a79-3e9149a57833", "id@odata.type": "Edm.Guid",
    blob: "AP8=", "blob@odata.type": "Edm.Binary",
  });
});

test("the sequence is an exact integer that grows strictly", () => {
  const first = nextSequence();
  assert.ok(nextSequence() > first);
  const message = auditMessage({ table: "people", operation: "DELETE", partitionKey: "P", rowKey: "R", userId: "u", before: { partitionKey: "P", rowKey: "R" }, sequence: 9223372036854775807n });
  assert.match(messageText(message), /,"sequence":9223372036854775807}$/);
  assert.throws(() => losslessEntity({ big: 2n ** 63n }), /beyond 64 bits/);
});

const spec = process.env.AUDITED_STEP ? JSON.parse(process.env.AUDITED_STEP) : null;

test("one step of changes through auditedTableClient", { skip: spec ? false : "run by tests/test_audited_client_js.py" }, async () => {
  const tables = TableClient.fromConnectionString(spec.connectionString, spec.table, { allowInsecureConnection: true });
  const audit = AuditClient.fromConnectionString(spec.connectionString, { queueName: spec.queue });
  const audited = auditedTableClient(tables, audit, { userId: "js-app@example.com", clock: () => new Date(spec.at) });
  const X = { partitionKey: "CANDIDATE", rowKey: "x-js" };
  switch (spec.step) {
    case 1:
      await audited.createEntity({
        ...X, text: "Chloé", flag: true, small: -7, big: 9223372036854775807n, bigObject: { value: "5", type: "Int64" },
        ratio: 2.5, whole: { value: "2", type: "Double" }, when: new Date("2026-11-25T02:00:00.123Z"),
        id: { value: "c9da6455-213d-42c9-9a79-3e9149a57833", type: "Guid" }, blob: new Uint8Array([0, 255, 1]),
      });
      break;
    case 2:
      await audited.updateEntity({ partitionKey: "CANDIDATE", rowKey: "0000001", name: "merged by js" });
      break;
    case 3:
      await audited.deleteEntity("CANDIDATE", "0000002");
      break;
    case 4:
      await audited.submitTransaction([
        ["create", { partitionKey: "CANDIDATE", rowKey: "y-js", n: -9223372036854775808n }],
        ["upsert", { ...X, whole: { value: "3", type: "Double" } }, "Merge"],
        ["delete", { partitionKey: "CANDIDATE", rowKey: "0000003" }],
      ]);
      break;
    case 5: // two changes of one entity in the same millisecond: the sequence orders them
      await audited.upsertEntity({ ...X, name: "first" }, "Merge");
      await audited.upsertEntity({ ...X, name: "second" }, "Replace");
      break;
    default:
      throw new Error(`no step ${spec.step}`);
  }
});
