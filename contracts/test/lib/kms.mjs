// The `hanzo-kms` binary as a test fixture: each Kms is one data directory, driven through the
// CLI exactly as an integrator would (`init`, `keyspace create`, `keys show`, `poai sign`,
// `poai sign-batch`, `hmm sign`). Nothing here signs by itself.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/// The binary under test: $HANZO_KMS_BIN, or the workspace's target/debug/hanzo-kms.
export const BIN = process.env.HANZO_KMS_BIN || path.join(repo, 'target', 'debug', 'hanzo-kms');

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'hanzo-kms-contracts-'));
process.on('exit', () => fs.rmSync(tmpRoot, { recursive: true, force: true }));

/// A fresh directory under this process's temporary root (removed at exit).
export function tempDir(name) {
  return fs.mkdtempSync(path.join(tmpRoot, `${name}-`));
}

export class Kms {
  /// A data directory made with `init` and one keyspace (`acme`/`gpt4` by default).
  /// `config`: YAML text for --config; `env`: extra environment (e.g. the HSM PIN).
  static create({ name = 'kms', config, env = {}, customer = 'acme', model = 'gpt4' } = {}) {
    const dir = tempDir(name);
    let configFile;
    if (config) {
      configFile = path.join(dir, 'kms.yaml');
      fs.writeFileSync(configFile, config);
    }
    const k = new Kms(path.join(dir, 'data'), { configFile, env, scratch: dir });
    k.run(['init']);
    k.run(['keyspace', 'create', '--customer', customer, '--model', model]);
    return k;
  }

  constructor(dataDir, { configFile, env = {}, scratch }) {
    this.dataDir = dataDir;
    this.configFile = configFile;
    this.env = env;
    this.scratch = scratch;
    this.n = 0;
  }

  /// Run the CLI with --json; returns stdout's JSON values (one per line). `env` overrides
  /// configuration for this call, e.g. {HANZO_KMS__KMS__HANZO__EIP712__CHAIN_ID: '1'}.
  run(args, { env = {} } = {}) {
    const full = ['--data-dir', this.dataDir, '--json'];
    if (this.configFile) full.push('--config', this.configFile);
    full.push(...args);
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HANZO_KMS')));
    const r = spawnSync(BIN, full, { env: { ...base, ...this.env, ...env }, encoding: 'utf8', maxBuffer: 256 << 20 });
    if (r.error) throw new Error(`${BIN}: ${r.error.message} (build it with cargo build, or set HANZO_KMS_BIN)`);
    if (r.status !== 0) {
      const e = new Error(`hanzo-kms ${args.join(' ')} exited ${r.status}: ${r.stderr.trim()}`);
      e.stderr = r.stderr;
      throw e;
    }
    return r.stdout.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
  }

  /// The EIP-55 address of the primary version of a secp256k1 key.
  address(key) {
    const [show] = this.run(['keys', 'show', key]);
    const v = show.versions.find((x) => x.version === show.primary_version) ?? show.versions[show.versions.length - 1];
    return v.address;
  }

  /// `keys show` as JSON.
  show(key) { return this.run(['keys', 'show', key])[0]; }

  #file(value) {
    const f = path.join(this.scratch, `in-${this.n++}.json`);
    fs.writeFileSync(f, typeof value === 'string' ? value : JSON.stringify(value));
    return f;
  }

  /// `poai sign`: {attestation, digest, signature, signer, algorithm, key, version}.
  signAttestation(att, { key = 'poai:acme:gpt4', env } = {}) {
    return this.run(['poai', 'sign', '--key', key, '--in', this.#file(att)], { env })[0];
  }

  /// `poai sign-batch`: one item per attestation, in order.
  signBatch(atts, { key = 'poai:acme:gpt4', env } = {}) {
    const f = this.#file(atts.map((a) => JSON.stringify(a)).join('\n'));
    return this.run(['poai', 'sign-batch', '--key', key, '--in', f], { env });
  }

  /// `hmm sign` for the attestation it pays for: `signed` is a `poai sign` output or a batch
  /// item (hanzo-kms requires one).
  signSettlement(s, { key = 'hmm:acme:gpt4', signed, env } = {}) {
    const args = ['hmm', 'sign', '--key', key, '--in', this.#file(s)];
    if (signed) args.push('--attestation', this.#file(signed));
    return this.run(args, { env })[0];
  }

  /// `poai calldata` or `hmm calldata` (`sub`) on a signed object: {function, calldata}.
  calldata(sub, signed, { attestation, item, verify } = {}) {
    const args = [sub, 'calldata', '--in', this.#file(signed)];
    if (attestation) args.push('--attestation', this.#file(attestation));
    if (item) args.push('--item', this.#file(item));
    if (verify) args.push('--verify');
    return this.run(args)[0];
  }

  /// A copy of this data directory: the same keys with their own nonce and settlement records,
  /// as a second KMS deployment restored from the same backup would have.
  clone(name = 'clone') {
    const dir = tempDir(name);
    fs.cpSync(this.dataDir, path.join(dir, 'data'), { recursive: true });
    return new Kms(path.join(dir, 'data'), { configFile: this.configFile, env: this.env, scratch: dir });
  }
}

/// An attestation input for `poai sign` at `timestamp`, with fresh hashes.
export function attestationInput(timestamp, extra = {}) {
  const h = (c) => '0x' + c.repeat(64);
  return {
    model_id: 'acme:gpt4',
    input_hash: h('1'),
    output_hash: h('2'),
    timestamp: Number(timestamp),
    compute_time_ms: 1500,
    node_id: 'node-1',
    ...extra,
  };
}

/// A settlement input for `hmm sign` paying for `attestationDigest`.
export function settlementInput(attestationDigest, timestamp, extra = {}) {
  return {
    job_id: 'job-42',
    provider: '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed',
    consumer: '0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359',
    amount: '1000000000000000000',
    attestation_digest: attestationDigest,
    timestamp: Number(timestamp),
    ...extra,
  };
}

/// hanzo-kms JSON → the ABI tuples of contracts/src/HanzoTypes.sol.
export const abi = {
  attestation: (a) => [a.model_id, a.input_hash, a.output_hash, BigInt(a.timestamp), BigInt(a.compute_time_ms), a.node_id, a.nonce],
  settlement: (s) => [s.job_id, s.provider, s.consumer, BigInt(s.amount), s.attestation_digest, BigInt(s.timestamp), BigInt(s.expiry), s.nonce],
  proof: (steps) => steps.map((p) => [p.hash, p.left]),
  /// A `poai sign-batch` item → BatchProof.
  batchProof: (item) => [item.batch.root, BigInt(item.batch.count), BigInt(item.batch.timestamp), item.signature, BigInt(item.index), abi.proof(item.proof)],
};
