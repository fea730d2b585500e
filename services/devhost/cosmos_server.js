#!/usr/bin/env node
/*
 * Local Cosmos DB (NoSQL API) emulator: the patched npm package @vercel/cosmosdb-server served over HTTPS
 * with keep-alive, made persistent.
 *
 *   node cosmos_server.js --host 127.0.0.1 --port 8081 --cert cert.pem --key key.pem --data-dir DIR
 *                         [--fsync] [--sweep-seconds 5]
 *
 * Persistence: an append-only journal, DIR/journal.log, one JSON line per committed write (a transactional
 * batch is one line, so it is replayed all or nothing). The line is written with a synchronous write(2)
 * before the response is sent, so every acknowledged write is in the kernel's page cache and survives the
 * death of this process (SIGTERM, SIGINT, kill -9). With --fsync it is also flushed to the disk (survives a
 * power cut; each write then costs a disk flush). On start the journal is replayed (an unterminated last
 * line, a write torn by a kill and therefore never acknowledged, is dropped) and compacted: the live state
 * is written to a new file that atomically replaces the journal.
 *
 * Journal lines: a change, or a JSON array of the changes of one transaction. A change names the
 * collection of items it belongs to by `a`, the _rids of its ancestors ([] databases, [db] collections,
 * [db, coll] documents and user-defined functions), and `k`, the kind ("dbs", "colls", "docs", "udfs"):
 *   {"a":[..],"k":"docs","n":42,"m":1732780000000,"d":{...}}   put (create or replace) item d; n is the
 *                                                                rid counter, m the write time in ms (TTL)
 *   {"a":[..],"k":"docs","x":"<rid>"}                          delete the item with that _rid
 *   {"a":[..],"k":"docs","n":42}                               rid counter only (compacted journals)
 *
 * One server per data directory: DIR/server.pid holds the owner's pid while it runs. Everything it writes
 * is private to its user (umask 077).
 * Prints "cosmos ready https://HOST:PORT ..." once it accepts connections.
 */
"use strict";

const fs = require("fs");
const path = require("path");
const { createHttpsServer, Account, txn } = require("@vercel/cosmosdb-server");

const USAGE =
  "usage: cosmos_server.js --host HOST --port PORT --cert CERT.pem --key KEY.pem --data-dir DIR " +
  "[--fsync] [--sweep-seconds N]";

function parseArgs(argv) {
  const args = { host: "127.0.0.1", port: 8081, fsync: false, sweepSeconds: 5 };
  for (let i = 0; i < argv.length; i += 1) {
    const key = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${key} needs a value\n${USAGE}`);
      i += 1;
      return argv[i];
    };
    switch (key) {
      case "--host": args.host = value(); break;
      case "--port": args.port = parseInt(value(), 10); break;
      case "--cert": args.cert = value(); break;
      case "--key": args.key = value(); break;
      case "--data-dir": args.dataDir = value(); break;
      case "--fsync": args.fsync = true; break;
      case "--sweep-seconds": args.sweepSeconds = parseFloat(value()); break;
      case "-h":
      case "--help":
        process.stdout.write(`${USAGE}\n`);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown argument ${key}\n${USAGE}`);
    }
  }
  if (!args.cert || !args.key || !args.dataDir || !Number.isInteger(args.port)) {
    throw new Error(USAGE);
  }
  return args;
}

// ---- the item collections of an account ----------------------------------------------------------------

const KINDS = new Set(["dbs", "colls", "docs", "udfs"]);

/** The Items collection at address `a` of kind `k`, or undefined when its parent no longer exists. */
function resolve(account, a, k) {
  if (a.length === 0) return k === "dbs" ? account.databases : undefined;
  const db = account.databases._data.get(a[0]);
  if (!db) return undefined;
  if (a.length === 1) return k === "colls" ? db.collections : undefined;
  const coll = db.collections._data.get(a[1]);
  if (!coll || a.length !== 2) return undefined;
  if (k === "docs") return coll.documents;
  if (k === "udfs") return coll.userDefinedFunctions;
  return undefined;
}

function applyRecord(account, rec) {
  if (!rec || !Array.isArray(rec.a) || !KINDS.has(rec.k)) throw new Error("malformed journal record");
  const items = resolve(account, rec.a, rec.k);
  if (!items) return; // its database or collection was deleted later on
  if (rec.x !== undefined) items._restoreDelete(rec.x);
  else if (rec.d !== undefined) items._restore(rec.d, rec.m, rec.n || 0);
  else items._restoreCount(rec.n || 0);
}

function toRecord(change) {
  const { items } = change;
  const rec = { a: items._address(), k: items._kind };
  if (change.op === "del") {
    rec.x = change.before._rid;
  } else {
    rec.n = items._ridCount;
    rec.m = change.item._mtime;
    rec.d = change.after;
  }
  return rec;
}

/** Every Items collection of the account, parents before children. */
function* allItems(account) {
  yield account.databases;
  for (const db of account.databases._data.values()) {
    yield db.collections;
    for (const coll of db.collections._data.values()) {
      yield coll.documents;
      yield coll.userDefinedFunctions;
    }
  }
}

// ---- files -----------------------------------------------------------------------------------------------

function writeAll(fd, text) {
  const buffer = Buffer.from(text, "utf8");
  let offset = 0;
  while (offset < buffer.length) {
    offset += fs.writeSync(fd, buffer, offset, buffer.length - offset);
  }
}

/** Calls fn(line) for every newline-terminated line; returns whether an unterminated tail was dropped. */
function forEachLine(file, fn) {
  let fd;
  try {
    fd = fs.openSync(file, "r");
  } catch (err) {
    if (err.code === "ENOENT") return false;
    throw err;
  }
  try {
    const chunk = Buffer.alloc(4 * 1024 * 1024);
    let carry = Buffer.alloc(0);
    for (;;) {
      const n = fs.readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      let data = Buffer.concat([carry, chunk.subarray(0, n)]);
      let start = 0;
      for (;;) {
        const nl = data.indexOf(10, start);
        if (nl < 0) break;
        if (nl > start) fn(data.toString("utf8", start, nl));
        start = nl + 1;
      }
      carry = Buffer.from(data.subarray(start));
      data = null;
    }
    return carry.length > 0;
  } finally {
    fs.closeSync(fd);
  }
}

function fsyncDir(dir) {
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === "EPERM";
  }
}

function takeLock(dir) {
  const lock = path.join(dir, "server.pid");
  try {
    const pid = parseInt(fs.readFileSync(lock, "utf8"), 10);
    if (pid && pid !== process.pid && isAlive(pid)) {
      throw new Error(`${dir} is in use by the running process ${pid}`);
    }
  } catch (err) {
    if (err.code !== "ENOENT") throw err;
  }
  fs.writeFileSync(lock, `${process.pid}\n`);
  return lock;
}

// ---- the journal -----------------------------------------------------------------------------------------

class Journal {
  constructor(dir, { fsync }) {
    this.dir = dir;
    this.file = path.join(dir, "journal.log");
    this.fsync = fsync;
    this.fd = null;
  }

  /** Replay the journal into `account`; returns counts for the ready line. */
  load(account) {
    let records = 0;
    let bad = 0;
    const torn = forEachLine(this.file, line => {
      let parsed;
      try {
        parsed = JSON.parse(line);
      } catch (err) {
        bad += 1;
        return;
      }
      const recs = Array.isArray(parsed) ? parsed : [parsed];
      for (const rec of recs) applyRecord(account, rec);
      records += recs.length;
    });
    if (torn) process.stderr.write("cosmos: dropped an unterminated last journal line (an unacknowledged write)\n");
    if (bad) process.stderr.write(`cosmos: skipped ${bad} unreadable journal line(s)\n`);
    return records;
  }

  /** Write the live state of `account` to a new journal that replaces the old one atomically. */
  compact(account) {
    const tmp = `${this.file}.compact`;
    const fd = fs.openSync(tmp, "w");
    let documents = 0;
    try {
      let pending = [];
      let size = 0;
      const push = rec => {
        const line = `${JSON.stringify(rec)}\n`;
        pending.push(line);
        size += line.length;
        if (size > 1 << 20) {
          writeAll(fd, pending.join(""));
          pending = [];
          size = 0;
        }
      };
      for (const items of allItems(account)) {
        items._sweep(); // no commit listener yet: expired items just go
        const a = items._address();
        const k = items._kind;
        push({ a, k, n: items._ridCount });
        for (const item of items._data.values()) {
          push({ a, k, n: items._ridCount, m: item._mtime, d: item.read() });
          if (k === "docs") documents += 1;
        }
      }
      writeAll(fd, pending.join(""));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.file);
    fsyncDir(this.dir);
    return documents;
  }

  open() {
    this.fd = fs.openSync(this.file, "a");
  }

  /** The commit listener: one line per committed transaction, written before the response goes out. */
  append(changes) {
    const recs = [];
    for (const change of changes) {
      if (change.items._kind) recs.push(toRecord(change));
    }
    if (recs.length === 0) return;
    const line = recs.length === 1 ? JSON.stringify(recs[0]) : JSON.stringify(recs);
    writeAll(this.fd, `${line}\n`);
    if (this.fsync) fs.fdatasyncSync(this.fd);
  }

  close() {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

// ---- main ------------------------------------------------------------------------------------------------

function main() {
  const args = parseArgs(process.argv.slice(2));
  const started = Date.now();
  // The journal holds password hashes and webhook headers: files 0600, folders 0700, also when this is
  // started by hand rather than by stack.py (which sets the same umask).
  process.umask(0o077);
  fs.mkdirSync(args.dataDir, { recursive: true, mode: 0o700 });
  const lock = takeLock(args.dataDir);

  const account = new Account(args.host, args.port);
  const journal = new Journal(args.dataDir, { fsync: args.fsync });
  const records = journal.load(account);
  const documents = journal.compact(account);
  journal.open();
  txn.setCommitListener(changes => journal.append(changes));

  const server = createHttpsServer({
    cert: fs.readFileSync(args.cert),
    key: fs.readFileSync(args.key),
    keepAlive: true,
    account
  });
  // Keep idle client connections open for long: clients reuse them instead of a new TLS handshake.
  server.keepAliveTimeout = 300 * 1000;
  server.headersTimeout = 310 * 1000;

  let sweeper = null;
  if (args.sweepSeconds > 0) {
    sweeper = setInterval(() => {
      for (const items of allItems(account)) {
        try {
          items._sweep();
        } catch (err) {
          process.stderr.write(`cosmos: TTL sweep failed: ${err.stack || err}\n`);
        }
      }
    }, args.sweepSeconds * 1000);
    sweeper.unref();
  }

  let stopping = false;
  const stop = signal => {
    if (stopping) return;
    stopping = true;
    if (sweeper) clearInterval(sweeper);
    server.close(() => {
      journal.close();
      try {
        fs.unlinkSync(lock);
      } catch (err) {
        // already gone
      }
      process.stdout.write(`cosmos stopped (${signal})\n`);
      process.exit(0);
    });
    // Idle keep-alive connections would hold close() open. Requests in flight get a moment to finish;
    // every acknowledged write is in the journal already.
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), 1000).unref();
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));

  server.on("error", err => {
    process.stderr.write(`cosmos: ${err.stack || err}\n`);
    process.exit(1);
  });
  server.listen(args.port, args.host, () => {
    const ms = Date.now() - started;
    process.stdout.write(
      `cosmos ready https://${args.host}:${args.port} (data ${args.dataDir}: ${records} journal records, ` +
        `${documents} documents, loaded in ${ms} ms${args.fsync ? ", fsync" : ""})\n`
    );
  });
}

try {
  main();
} catch (err) {
  process.stderr.write(`cosmos: ${err.message || err}\n`);
  process.exit(1);
}
