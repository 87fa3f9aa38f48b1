// The reference UnixFS importer (ipfs-unixfs-importer, the one Helia adds with) with every
// parameter of the unixfs-v1-2025 profile (IPIP-499) set explicitly, and the deterministic inputs
// of kubo's IPIP-499 test vectors (test/cli/cid_profiles_test.go).
//
//   node unixfs.mjs add PATH...                     prints `CID PATH` for each path
//   node unixfs.mjs bytes OUT SIZE SEED             writes SIZE keystream bytes of SEED to OUT
//   node unixfs.mjs names OUT COUNT LEN LAST SEED   creates COUNT files holding "x" in OUT
//
// The keystream is ChaCha20 keyed with SHA-256(SEED), zero nonce, counter 0 (kubo's
// DeterministicRandomReader); names take their letters from it as kubo's
// createDeterministicFiles does.
import { createCipheriv, createHash } from 'node:crypto'
import { mkdirSync, readdirSync, lstatSync, readFileSync, writeFileSync, createWriteStream } from 'node:fs'
import { join, basename } from 'node:path'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

const UNIXFS_V1_2025 = {
  cidVersion: 1,
  rawLeaves: true,
  reduceSingleLeafToSelf: true,
  chunker: fixedSize({ chunkSize: 1_048_576 }),
  layout: balanced({ maxChildrenPerNode: 1024 }),
  shardSplitThresholdBytes: 262_144,
  shardSplitStrategy: 'block-bytes',
  shardFanoutBits: 8,
  wrapWithDirectory: false,
}

// Blocks are only counted: the CIDs are what is asked for.
const blockstore = {
  put: async (cid) => cid,
  get: async () => { throw new Error('no block is read back') },
  has: async () => false,
}

// Entries of a tree as the importer takes them; hidden entries are left out, as `ipfs add -r`
// leaves them out; a symbolic link is refused (the importer has no symlink entries).
function * entries (path, name) {
  const stat = lstatSync(path)
  if (stat.isSymbolicLink()) throw new Error(`${path}: a symbolic link`)
  if (stat.isDirectory()) {
    const children = readdirSync(path).filter((c) => !c.startsWith('.')).sort()
    if (children.length === 0) yield { path: name }
    for (const child of children) yield * entries(join(path, child), `${name}/${child}`)
  } else {
    yield { path: name, content: readFileSync(path) }
  }
}

function keystream (seed) {
  const key = createHash('sha256').update(seed).digest()
  return createCipheriv('chacha20', key, Buffer.alloc(16))
}

const [command, ...args] = process.argv.slice(2)
if (command === 'add') {
  for (const path of args) {
    let root
    for await (const entry of importer(entries(path, basename(path)), blockstore, UNIXFS_V1_2025)) {
      root = entry
    }
    console.log(`${root.cid.toString()} ${path}`)
  }
} else if (command === 'bytes') {
  const [out, size, seed] = args
  const cipher = keystream(seed)
  const file = createWriteStream(out)
  const zeros = Buffer.alloc(1 << 20)
  for (let left = Number(size); left > 0; left -= zeros.length) {
    const n = Math.min(left, zeros.length)
    if (!file.write(cipher.update(zeros.subarray(0, n)))) {
      await new Promise((resolve) => file.once('drain', resolve))
    }
  }
  await new Promise((resolve, reject) => file.end((err) => err ? reject(err) : resolve()))
} else if (command === 'names') {
  const [out, count, len, last, seed] = args
  const alphabet = 'abcdefghijklmnopqrstuvwxyz01234567890-_'
  const stream = keystream(seed).update(Buffer.alloc(1 << 20))
  mkdirSync(out, { recursive: true })
  let offset = 0
  for (let i = 0; i < Number(count); i++) {
    const n = i === Number(count) - 1 ? Number(last) : Number(len)
    let name = ''
    for (let j = 0; j < n; j++) name += alphabet[stream[offset + j] % alphabet.length]
    offset += n
    writeFileSync(join(out, name), 'x')
  }
} else {
  console.error('usage: node unixfs.mjs add PATH... | bytes OUT SIZE SEED | names OUT COUNT LEN LAST SEED')
  process.exit(2)
}
