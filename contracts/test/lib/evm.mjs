// A chain on a real EVM (@ethereumjs/vm, the Ethereum Foundation's JavaScript EVM): blocks are
// built and sealed one transaction at a time, with a chosen block.timestamp, so tests can cross
// expiries and send a second transaction in a later block.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCustomCommon, Mainnet, Hardfork } from '@ethereumjs/common';
import { createVM, buildBlock } from '@ethereumjs/vm';
import { createBlock } from '@ethereumjs/block';
import { createFeeMarket1559Tx } from '@ethereumjs/tx';
import { Account, createAddressFromPrivateKey, createAddressFromString, hexToBytes, bytesToHex } from '@ethereumjs/util';
import { Interface, getAddress, getCreateAddress, keccak256, randomBytes } from 'ethers';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/// The compiled contracts (scripts/build.mjs writes them; scripts/test-contracts.sh runs it first).
export function artifacts() {
  const file = path.join(root, 'build', 'contracts.json');
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: run node scripts/build.mjs first`);
  return JSON.parse(fs.readFileSync(file, 'utf8')).artifacts;
}

/// One interface that decodes every function, event and error of our contracts (errors of the
/// verifier bubble up through HMMSettlement).
export function allErrors() {
  const a = artifacts();
  const seen = new Set();
  const fragments = [];
  for (const name of ['PoAIVerifier', 'HMMSettlement']) {
    for (const f of a[name].abi) {
      const key = JSON.stringify([f.type, f.name, f.inputs]);
      if (f.type === 'error' && !seen.has(key)) { seen.add(key); fragments.push(f); }
    }
  }
  return new Interface(fragments);
}

export class Chain {
  /// A fresh chain with id `chainId` (96369, hanzo-kms's default) whose genesis is at `timestamp`.
  static async create({ chainId = 96369n, timestamp } = {}) {
    const common = createCustomCommon({ chainId: Number(chainId) }, Mainnet, { hardfork: Hardfork.Cancun });
    const vm = await createVM({ common });
    const chain = new Chain(vm, common);
    chain.senderKey = randomBytes(32);
    chain.sender = createAddressFromPrivateKey(chain.senderKey);
    await vm.stateManager.putAccount(chain.sender, new Account(0n, 10n ** 24n));
    chain.head = createBlock(
      { header: { number: 0n, timestamp: BigInt(timestamp ?? Math.floor(Date.now() / 1000)), gasLimit: 60_000_000n, baseFeePerGas: 7n } },
      { common, setHardfork: false },
    );
    return chain;
  }

  constructor(vm, common) {
    this.vm = vm;
    this.common = common;
    this.nonce = 0n;
    this.contracts = {};
  }

  get chainId() { return this.common.chainId(); }
  get timestamp() { return this.head.header.timestamp; }

  /// The default time of the next block: 12 s after the head, or the wall clock if that is
  /// later, as on a live chain (hanzo-kms signs with the wall clock).
  nextTimestamp() {
    const wall = BigInt(Math.floor(Date.now() / 1000));
    const next = this.timestamp + 12n;
    return next > wall ? next : wall;
  }

  /// The address the next contract creation will get.
  nextAddress() { return getCreateAddress({ from: this.sender.toString(), nonce: this.nonce }); }

  /// Deploy artifact `name` with constructor `args`; returns {address, iface, receipt}.
  async deploy(name, args = [], opts = {}) {
    const art = artifacts()[name];
    const iface = new Interface(art.abi);
    const data = art.bytecode + iface.encodeDeploy(args).slice(2);
    const r = await this.send(null, data, opts);
    if (r.reverted) throw new Error(`deploying ${name} reverted: ${r.revertData}`);
    const address = getAddress(r.createdAddress);
    return { name, address, iface, receipt: r };
  }

  /// Mine one block (at `timestamp`, default nextTimestamp()) holding one transaction to `to`
  /// (null: a creation) with `data`. Returns gas figures, logs and, if it reverted, the revert data.
  async send(to, data, { timestamp, gasLimit = 30_000_000n } = {}) {
    const ts = BigInt(timestamp ?? this.nextTimestamp());
    const builder = await buildBlock(this.vm, {
      parentBlock: this.head,
      headerData: { timestamp: ts, gasLimit: 60_000_000n, coinbase: '0x' + '00'.repeat(19) + '01' },
      blockOpts: { putBlockIntoBlockchain: false, setHardfork: false },
    });
    const tx = createFeeMarket1559Tx(
      { nonce: this.nonce, to: to ?? undefined, data, gasLimit, maxFeePerGas: 10n ** 11n, maxPriorityFeePerGas: 1n, chainId: this.chainId },
      { common: this.common },
    ).sign(this.senderKey);
    const result = await builder.addTransaction(tx);
    const { block } = await builder.build();
    this.head = block;
    this.nonce += 1n;
    const ex = result.execResult;
    return {
      block: block.header.number,
      timestamp: ts,
      gasUsed: result.totalGasSpent,
      executionGas: ex.executionGasUsed,
      calldataBytes: hexToBytes(data).length,
      reverted: ex.exceptionError !== undefined,
      revertData: ex.exceptionError ? bytesToHex(ex.returnValue) : undefined,
      returnData: bytesToHex(ex.returnValue),
      createdAddress: result.createdAddress?.toString(),
      logs: (result.receipt.logs || []).map(([addr, topics, d]) => ({ address: bytesToHex(addr), topics: topics.map(bytesToHex), data: bytesToHex(d) })),
    };
  }

  /// eth_call against the head's state in a block at `timestamp` (default nextTimestamp()).
  async call(to, data, { timestamp } = {}) {
    const ts = BigInt(timestamp ?? this.nextTimestamp());
    const block = createBlock({ header: { number: this.head.header.number + 1n, timestamp: ts, gasLimit: 60_000_000n, baseFeePerGas: 7n } }, { common: this.common, setHardfork: false });
    // A call changes nothing: its state (the caller's nonce among it) is rolled back.
    await this.vm.stateManager.checkpoint();
    let r;
    try {
      r = await this.vm.evm.runCall({
        to: createAddressFromString(to), caller: this.sender, origin: this.sender, data: hexToBytes(data), gasLimit: 30_000_000n, block,
        skipBalance: true,
      });
    } finally {
      await this.vm.stateManager.revert();
    }
    const ex = r.execResult;
    return {
      executionGas: ex.executionGasUsed,
      reverted: ex.exceptionError !== undefined,
      revertData: ex.exceptionError ? bytesToHex(ex.returnValue) : undefined,
      returnData: bytesToHex(ex.returnValue),
    };
  }
}

/// A bound contract: `c.call('verify', [a, sig], opts)` decodes results; `c.send(...)` mines.
export class Contract {
  constructor(chain, deployed) {
    this.chain = chain;
    this.address = deployed.address;
    this.iface = deployed.iface;
    this.errors = allErrors();
  }

  encode(fn, args) { return this.iface.encodeFunctionData(fn, args); }

  async call(fn, args = [], opts = {}) {
    const r = await this.chain.call(this.address, this.encode(fn, args), opts);
    return this.#decorate(fn, r);
  }

  async send(fn, args = [], opts = {}) {
    const r = await this.chain.send(this.address, this.encode(fn, args), opts);
    r.events = [];
    for (const l of r.logs) {
      if (l.address.toLowerCase() !== this.address.toLowerCase()) continue;
      const parsed = this.iface.parseLog({ topics: l.topics, data: l.data });
      if (parsed) r.events.push(parsed);
    }
    return this.#decorate(fn, r);
  }

  #decorate(fn, r) {
    if (r.reverted) {
      r.error = r.revertData && r.revertData.length >= 10 ? this.errors.parseError(r.revertData) : null;
    } else {
      r.result = this.iface.decodeFunctionResult(fn, r.returnData);
    }
    return r;
  }
}

export { keccak256 };
