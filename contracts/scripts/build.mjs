// Compiles contracts/src and contracts/bench with the pinned solcjs (package.json), offline, and
// writes build/contracts.json: {"Name": {abi, bytecode, deployedBytecode}}. Warnings are errors.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const solc = require('solc');

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/// Compiler settings, shared with the docs (docs/onchain.md, "Build").
export const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'shanghai',
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

export function compile() {
  const sources = {};
  for (const dir of ['src', 'bench']) {
    for (const f of fs.readdirSync(path.join(root, dir)).sort()) {
      if (f.endsWith('.sol')) sources[`${dir}/${f}`] = { content: fs.readFileSync(path.join(root, dir, f), 'utf8') };
    }
  }
  const findImports = (p) => {
    const candidates = [path.join(root, 'node_modules', p), path.join(root, p)];
    for (const c of candidates) if (fs.existsSync(c)) return { contents: fs.readFileSync(c, 'utf8') };
    return { error: `not found: ${p}` };
  };
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const problems = (out.errors || []).filter((e) => e.severity !== 'info');
  if (problems.length) {
    for (const e of problems) process.stderr.write(`${e.formattedMessage}\n`);
    throw new Error(`solc ${solc.version()}: ${problems.length} error(s) or warning(s)`);
  }
  const artifacts = {};
  for (const [file, contracts] of Object.entries(out.contracts)) {
    if (!file.startsWith('src/') && !file.startsWith('bench/')) continue;
    for (const [name, c] of Object.entries(contracts)) {
      if (!c.evm.bytecode.object || c.abi.length === 0) continue; // abstract contracts; inlined libraries
      artifacts[name] = { source: file, abi: c.abi, bytecode: `0x${c.evm.bytecode.object}`, deployedBytecode: `0x${c.evm.deployedBytecode.object}` };
    }
  }
  return { compiler: solc.version(), settings: SETTINGS, artifacts };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const t0 = Date.now();
  const result = compile();
  fs.mkdirSync(path.join(root, 'build'), { recursive: true });
  fs.writeFileSync(path.join(root, 'build', 'contracts.json'), JSON.stringify(result, null, 1));
  const sizes = Object.entries(result.artifacts).map(([n, a]) => `${n} ${(a.deployedBytecode.length - 2) / 2} B`);
  console.log(`solc ${result.compiler}: ${sizes.join(', ')} (${Date.now() - t0} ms)`);
}
