/**
 * tablebackup-audit: what a TypeScript application using @azure/data-tables needs to report each
 * change to the tablebackup audit writer, so `tablebackup restore --as-of T --replay-audit` and
 * `tablebackup undelete` can replay it. Messages are exactly the writer's form
 * (tablebackup/audit/messages.py): base64 on the queue, images in the lossless JSON backups use.
 */

import type { TableClient, TransactionAction } from "@azure/data-tables";
import { QueueClient, StoragePipelineOptions } from "@azure/storage-queue";
import type { TokenCredential } from "@azure/identity";

export const DEFAULT_QUEUE = "audit-events";
/** A queue message holds 64 KiB as sent, i.e. after base64. */
export const MAX_MESSAGE_BYTES = 64 * 1024;

const TYPE_SUFFIX = "@odata.type";
const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const EDM_TYPES = ["Binary", "Boolean", "DateTime", "Double", "Guid", "Int32", "Int64", "String"];
// Names the SDK adds to what it returns; they are the service's bookkeeping, not the entity.
const SYSTEM_NAMES = new Set(["etag", "timestamp", "Timestamp", "odata.etag", "odata.metadata"]);

export type Operation = "INSERT" | "UPDATE" | "DELETE";
export type Image = Record<string, unknown>;
/** An entity as the lossless JSON form: `name` and, for typed values, `name@odata.type`. */
export type LosslessEntity = Record<string, string | number | boolean>;

export interface AuditMessage {
  tableName: string;
  operation: Operation;
  partitionKey: string;
  rowKey: string;
  userId: string;
  timestamp: string;
  beforeData: LosslessEntity | null;
  afterData: LosslessEntity | null;
  sequence: bigint;
}

export interface ChangeFields {
  table: string;
  operation: Operation;
  partitionKey: string;
  rowKey: string;
  userId: string;
  before?: Image | null;
  after?: Image | null;
  /** When the change happened; defaults to now. A string must be ISO-8601 UTC (7 digits kept). */
  timestamp?: Date | string;
  sequence?: bigint;
}

let lastSequence = 0n;

/** Nanoseconds since the epoch, but strictly greater than the last one this process gave: it orders
 * this process's messages exactly (two changes in one millisecond), other processes' as clocks agree. */
export function nextSequence(): bigint {
  const now = BigInt(Date.now()) * 1_000_000n;
  lastSequence = now > lastSequence ? now : lastSequence + 1n;
  return lastSequence;
}

/** A Date as `YYYY-MM-DDTHH:MM:SS.fffffffZ` (a Date holds milliseconds, so the last 4 digits are 0). */
export function instantText(instant: Date): string {
  const iso = instant.toISOString(); // 2026-11-25T02:00:00.123Z
  if (!/^\d{4}-/.test(iso)) throw new Error(`${iso} is outside the Table service's DateTime range`);
  return `${iso.slice(0, 23)}0000Z`;
}

const INSTANT = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,7}))?Z$/;

function dateTimeText(value: unknown, name: string): string {
  if (value instanceof Date) return instantText(value);
  if (typeof value === "string") {
    const match = INSTANT.exec(value);
    if (!match) throw new Error(`${name}: ${JSON.stringify(value)} is not a UTC ISO-8601 DateTime`);
    return `${match[1]}.${(match[2] ?? "").padEnd(7, "0")}Z`;
  }
  throw new Error(`${name}: a DateTime must be a Date or an ISO-8601 string`);
}

function doubleValue(value: unknown, name: string): number | string {
  const number = typeof value === "string" ? Number(value) : value;
  if (typeof number !== "number" || (typeof value === "string" && value.trim() === "" )) {
    throw new Error(`${name}: ${JSON.stringify(value)} is not a Double`);
  }
  if (Number.isNaN(number)) return "NaN";
  if (!Number.isFinite(number)) return number > 0 ? "Infinity" : "-Infinity";
  return number;
}

function int64Text(value: unknown, name: string): string {
  let big: bigint;
  try {
    big = BigInt(value as string | number | bigint);
  } catch {
    throw new Error(`${name}: ${JSON.stringify(String(value))} is not an Int64`);
  }
  if (big < INT64_MIN || big > INT64_MAX) throw new Error(`${name}: ${big} is beyond 64 bits`);
  return big.toString();
}

function binaryText(value: unknown, name: string): string {
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64");
  if (typeof value === "string") return value; // already base64, as the service sends it
  throw new Error(`${name}: a Binary must be a Uint8Array or base64 text`);
}

/** The value and its annotation (undefined for the types JSON carries bare: String, Boolean, Int32). */
function typed(type: string, value: unknown, name: string): [string | number | boolean, string | undefined] {
  switch (type) {
    case "String":
      return [String(value), undefined];
    case "Boolean":
      return [value === true || value === "true", undefined];
    case "Int32": {
      const number = Number(value);
      if (!Number.isInteger(number) || number < INT32_MIN || number > INT32_MAX) {
        throw new Error(`${name}: ${JSON.stringify(value)} is not an Int32`);
      }
      return [number, undefined];
    }
    case "Int64":
      return [int64Text(value, name), "Edm.Int64"];
    case "Double":
      return [doubleValue(value, name), "Edm.Double"];
    case "DateTime":
      return [dateTimeText(value, name), "Edm.DateTime"];
    case "Guid":
      return [String(value), "Edm.Guid"];
    case "Binary":
      return [binaryText(value, name), "Edm.Binary"];
    default:
      throw new Error(`${name}: unknown EDM type ${type}`);
  }
}

/** A value as the SDK returns or accepts it, as the SDK would send it. */
function valueOf(value: unknown, name: string): [string | number | boolean, string | undefined] {
  if (typeof value === "string" || typeof value === "boolean") return [value, undefined];
  if (typeof value === "number") {
    // The SDK sends a number bare: the service stores an integer in Int32's range as Int32, any other as Double.
    if (Number.isInteger(value) && value >= INT32_MIN && value <= INT32_MAX) return [value, undefined];
    return typed("Double", value, name);
  }
  if (typeof value === "bigint") return typed("Int64", value, name);
  if (value instanceof Date) return typed("DateTime", value, name);
  if (value instanceof Uint8Array) return typed("Binary", value, name);
  if (typeof value === "object" && value !== null && "value" in value && "type" in value) {
    const { value: inner, type } = value as { value: unknown; type: string };
    if (EDM_TYPES.includes(type)) return typed(type, inner, name);
    if (type.startsWith("Edm.") && EDM_TYPES.includes(type.slice(4))) return typed(type.slice(4), inner, name);
  }
  throw new Error(`${name}: ${typeof value} is not a Table entity value`);
}

/** The entity (as @azure/data-tables returns or accepts it, or already lossless) in the lossless JSON
 * form backups and the audit writer use: Int64, DateTime (7 digits), Guid, Binary and Double carry
 * `name@odata.type`; String, Boolean and Int32 are bare. Bookkeeping (etag, timestamp) and
 * null/undefined values are dropped; partitionKey/rowKey become PartitionKey/RowKey. */
export function losslessEntity(entity: Image): LosslessEntity {
  const result: LosslessEntity = {};
  for (const [key, value] of Object.entries(entity)) {
    if (key.endsWith(TYPE_SUFFIX) || SYSTEM_NAMES.has(key) || key.startsWith("odata.")) continue;
    if (value === null || value === undefined) continue;
    const name = key === "partitionKey" ? "PartitionKey" : key === "rowKey" ? "RowKey" : key;
    const annotation = entity[key + TYPE_SUFFIX];
    const [converted, edm] =
      typeof annotation === "string" ? typed(annotation.replace(/^Edm\./, ""), value, name) : valueOf(value, name);
    result[name] = converted;
    if (edm) result[name + TYPE_SUFFIX] = edm;
  }
  return result;
}

/** `before` with the properties of `sent` merged over it, as the service does for a Merge. */
export function mergedImage(before: LosslessEntity | null, sent: LosslessEntity): LosslessEntity {
  const result: LosslessEntity = { ...(before ?? {}) };
  for (const name of Object.keys(sent)) {
    if (!name.endsWith(TYPE_SUFFIX)) delete result[name + TYPE_SUFFIX]; // its type is the sent one's
  }
  return { ...result, ...sent };
}

function sizeOfBase64(text: string): number {
  return 4 * Math.ceil(Buffer.byteLength(text, "utf8") / 3);
}

/** The message for one change, in the writer's exact form (throws if the writer would reject it). */
export function auditMessage(fields: ChangeFields): AuditMessage {
  const { table, operation, partitionKey, rowKey, userId } = fields;
  if (!["INSERT", "UPDATE", "DELETE"].includes(operation)) {
    throw new Error(`operation must be INSERT, UPDATE or DELETE, not ${JSON.stringify(operation)}`);
  }
  if (!/^[A-Za-z][A-Za-z0-9]{2,62}$/.test(table)) throw new Error(`${JSON.stringify(table)} is not a table name`);
  if (typeof partitionKey !== "string" || typeof rowKey !== "string") throw new Error("partitionKey and rowKey must be strings");
  if (!userId || userId.length > 1024) throw new Error("userId must be 1 to 1024 characters");
  const timestamp =
    fields.timestamp === undefined ? instantText(new Date()) : dateTimeText(fields.timestamp, "timestamp");
  return {
    tableName: table,
    operation,
    partitionKey,
    rowKey,
    userId,
    timestamp,
    beforeData: fields.before ? losslessEntity(fields.before) : null,
    afterData: fields.after ? losslessEntity(fields.after) : null,
    sequence: fields.sequence ?? nextSequence(),
  };
}

/** The message as JSON text: compact, the sequence an exact integer (beyond a double's 53 bits),
 * and a lone surrogate written as its escape (JSON.stringify does), so the text is valid UTF-8. */
export function messageText(message: AuditMessage): string {
  const { sequence, ...rest } = message;
  if (typeof sequence !== "bigint" || sequence < 0n || sequence > INT64_MAX) {
    throw new Error("sequence must be a bigint from 0 to 2^63-1");
  }
  return `${JSON.stringify(rest).slice(0, -1)},"sequence":${sequence.toString()}}`;
}

function describe(message: AuditMessage): string {
  return `${message.operation} of ${message.tableName} (PartitionKey ${JSON.stringify(message.partitionKey)}, RowKey ${JSON.stringify(message.rowKey)})`;
}

export interface AuditClientOptions {
  queueName?: string;
  pipeline?: StoragePipelineOptions;
}

/** Sends audit messages to the writer's queue, base64-encoded as its Functions trigger expects
 * (a plain-text message would fail every delivery and end in the poison queue). */
export class AuditClient {
  constructor(readonly queue: QueueClient) {}

  static fromConnectionString(connectionString: string, options: AuditClientOptions = {}): AuditClient {
    return new AuditClient(new QueueClient(connectionString, options.queueName ?? DEFAULT_QUEUE, options.pipeline));
  }

  /** Identity-based: `queueUrl` is `https://<account>.queue.core.windows.net/<queue>`, the credential
   * any TokenCredential (e.g. DefaultAzureCredential) with Storage Queue Data Message Sender on it. */
  static fromQueueUrl(queueUrl: string, credential: TokenCredential, options: StoragePipelineOptions = {}): AuditClient {
    return new AuditClient(new QueueClient(queueUrl, credential, options));
  }

  /** Send one change; returns the queue message id. */
  async send(fields: ChangeFields): Promise<string> {
    return this.sendMessage(auditMessage(fields));
  }

  /** Send a message already in the writer's form; returns the queue message id. */
  async sendMessage(message: AuditMessage): Promise<string> {
    const text = messageText(message);
    const size = sizeOfBase64(text);
    if (size > MAX_MESSAGE_BYTES) {
      throw new Error(`audit message for ${describe(message)} is ${size} bytes once base64-encoded; a queue message holds 64 KiB`);
    }
    const content = Buffer.from(text, "utf8").toString("base64");
    try {
      return (await this.queue.sendMessage(content)).messageId;
    } catch (error) {
      if ((error as { statusCode?: number }).statusCode !== 404) throw error;
      await this.queue.createIfNotExists(); // the first message ever sent creates the queue
      return (await this.queue.sendMessage(content)).messageId;
    }
  }
}

// ---------------------------------------------------------------------------------------------

/** Raised when a write succeeded but its audit message could not be sent: the change is in the
 * table and missing from the audit trail (replay will show a gap) until the caller resends it. */
export class AuditNotSentError extends Error {
  constructor(
    readonly entity: { table: string; partitionKey: string; rowKey: string },
    readonly messages: AuditMessage[],
    readonly cause: unknown,
  ) {
    super(
      `the write to ${entity.table} (PartitionKey ${JSON.stringify(entity.partitionKey)}, RowKey ${JSON.stringify(entity.rowKey)}) succeeded but its audit message was not sent: ${String((cause as Error)?.message ?? cause)}`,
    );
    this.name = "AuditNotSentError";
  }
}

export interface AuditedOptions {
  userId: string;
  /** When changes happen (default: now); tests inject a clock. */
  clock?: () => Date;
}

type Keyed = { partitionKey: string; rowKey: string };
type Mode = "Merge" | "Replace";

/** Parses the service's entity JSON keeping what the SDK's JSON.parse loses: a Double sent as
 * `2.0` stays a Double. The body is one flat object (entities have no nesting). */
function parseWireEntity(body: string): Image {
  const result: Image = {};
  const token = /\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)\s*([:,}])/gy;
  let position = body.indexOf("{") + 1;
  let name: string | undefined;
  token.lastIndex = position;
  for (let match = token.exec(body); match; match = token.exec(body)) {
    const [, text, after] = match;
    if (after === ":") {
      name = JSON.parse(text) as string;
    } else if (name !== undefined) {
      const value = JSON.parse(text);
      result[name] = value;
      if (typeof value === "number" && /[.eE]/.test(text)) result[name + TYPE_SUFFIX] ??= "Edm.Double";
      name = undefined;
    }
    position = token.lastIndex;
    if (after === "}") break;
  }
  if (!body.slice(position).trim().length && position > 1) return result;
  throw new Error("the service's answer is not a flat JSON entity");
}

async function currentImage(client: TableClient, partitionKey: string, rowKey: string): Promise<LosslessEntity | null> {
  let body: string | undefined;
  try {
    await client.getEntity(partitionKey, rowKey, {
      disableTypeConversion: true,
      onResponse: (response) => {
        body = response.bodyAsText ?? undefined;
      },
    });
  } catch (error) {
    if ((error as { statusCode?: number }).statusCode === 404) return null;
    throw error;
  }
  if (body === undefined) throw new Error("the service's answer had no body");
  return losslessEntity(parseWireEntity(body));
}

interface Change {
  operation: Operation;
  partitionKey: string;
  rowKey: string;
  before: LosslessEntity | null;
  after: LosslessEntity | null;
}

function changeOf(kind: string, entity: Keyed & Image, mode: Mode, before: LosslessEntity | null): Change | null {
  const { partitionKey, rowKey } = entity;
  if (kind === "delete") {
    // A delete that found nothing changed nothing (the service answers 404 and the write throws).
    return before ? { operation: "DELETE", partitionKey, rowKey, before, after: null } : null;
  }
  const sent = losslessEntity(entity);
  const after = mode === "Merge" ? mergedImage(before, sent) : sent;
  return { operation: before ? "UPDATE" : "INSERT", partitionKey, rowKey, before: kind === "create" ? null : before, after };
}

/**
 * A TableClient whose writes are audited: each reads the before image where it needs one, performs
 * the write, then sends one audit message per changed entity. A failed write sends nothing; a message
 * that fails after the write throws AuditNotSentError, naming the entity (the write stands).
 * A concurrent writer of the same entity between the read and the write would make the before
 * image (and a Merge's after image) stale: keep one writer per entity, or pass an etag.
 */
export function auditedTableClient(client: TableClient, audit: AuditClient, options: AuditedOptions) {
  const clock = options.clock ?? (() => new Date());
  const table = client.tableName;

  async function report(changes: Change[]): Promise<void> {
    const at = clock();
    const messages = changes.map((change) =>
      auditMessage({ table, userId: options.userId, timestamp: at, ...change }),
    );
    for (const [index, message] of messages.entries()) {
      try {
        await audit.sendMessage(message);
      } catch (error) {
        throw new AuditNotSentError({ table, partitionKey: message.partitionKey, rowKey: message.rowKey }, messages.slice(index), error);
      }
    }
  }

  async function single<R>(kind: string, entity: Keyed & Image, mode: Mode, write: () => Promise<R>): Promise<R> {
    const before = kind === "create" ? null : await currentImage(client, entity.partitionKey, entity.rowKey);
    const result = await write();
    const change = changeOf(kind, entity, mode, before);
    if (change) await report([change]);
    return result;
  }

  return {
    client,
    createEntity: <T extends object>(entity: Keyed & T, opts?: Parameters<TableClient["createEntity"]>[1]) =>
      single("create", entity as Keyed & Image, "Replace", () => client.createEntity(entity, opts)),
    upsertEntity: <T extends object>(entity: Keyed & T, mode: Mode = "Merge", opts?: Parameters<TableClient["upsertEntity"]>[2]) =>
      single("upsert", entity as Keyed & Image, mode, () => client.upsertEntity(entity, mode, opts)),
    updateEntity: <T extends object>(entity: Keyed & T, mode: Mode = "Merge", opts?: Parameters<TableClient["updateEntity"]>[2]) =>
      single("update", entity as Keyed & Image, mode, () => client.updateEntity(entity, mode, opts)),
    deleteEntity: (partitionKey: string, rowKey: string, opts?: Parameters<TableClient["deleteEntity"]>[2]) =>
      single("delete", { partitionKey, rowKey }, "Replace", () => client.deleteEntity(partitionKey, rowKey, opts)),
    /** One transaction (one partition): every entity's before image first, then the transaction,
     * then one message per action, in the transaction's order and all at one instant. */
    async submitTransaction(actions: TransactionAction[]) {
      const befores: (LosslessEntity | null)[] = [];
      for (const [kind, entity] of actions) {
        const keyed = entity as Keyed;
        befores.push(kind === "create" ? null : await currentImage(client, keyed.partitionKey, keyed.rowKey));
      }
      const result = await client.submitTransaction(actions);
      const changes = actions.map((action, index) => {
        const [kind, entity] = action;
        const mode: Mode = kind === "update" || kind === "upsert" ? ((action[2] as Mode | undefined) ?? "Merge") : "Replace";
        return changeOf(kind, entity as Keyed & Image, mode, befores[index]);
      });
      await report(changes.filter((change): change is Change => change !== null));
      return result;
    },
  };
}

export type AuditedTableClient = ReturnType<typeof auditedTableClient>;
