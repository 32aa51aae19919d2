// A deployment as docs/onchain.md describes it: HMMSettlement (which is a PoAIVerifier) on a fresh
// chain, with a KMS's poai key authorised for its model and its hmm key registered as settlement
// signer. `verifier` and `settlement` are the same contract, named by role.
import { getAddress } from 'ethers';
import { Chain, Contract } from './evm.mjs';

export const HOUR = 3600n;

/// Deploy HMMSettlement; `bind`: the domain names it as verifyingContract.
export async function deploy({ chainId, bind = false, ttl = HOUR, timestamp } = {}) {
  const chain = await Chain.create({ chainId, timestamp: timestamp ?? BigInt(Math.floor(Date.now() / 1000)) - 30n });
  const owner = getAddress(chain.sender.toString());
  const settlement = new Contract(chain, await chain.deploy('HMMSettlement', [owner, bind, ttl]));
  return { chain, verifier: settlement, settlement, owner };
}

/// Authorise `kms`'s poai key for `model` and register its hmm key; returns both addresses.
export async function register({ verifier, settlement }, kms, { model = 'acme:gpt4', poai = 'poai:acme:gpt4', hmm = 'hmm:acme:gpt4' } = {}) {
  const poaiAddress = kms.address(poai);
  const hmmAddress = kms.address(hmm);
  must(await verifier.send('setModelSigner', [model, poaiAddress, true]));
  must(await settlement.send('setSettlementSigner', [hmmAddress, true]));
  return { poaiAddress, hmmAddress };
}

/// The result of a call or transaction that must succeed.
export function must(r) {
  if (r.reverted) throw new Error(`reverted: ${r.error ? `${r.error.name}(${r.error.args.join(', ')})` : r.revertData}`);
  return r;
}

/// Unix seconds now.
export const now = () => BigInt(Math.floor(Date.now() / 1000));

export { Chain, Contract };
