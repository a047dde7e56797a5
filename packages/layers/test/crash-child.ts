// Child process of src/train.crash.test.ts: resumes the shared tiny run from the latest
// checkpoint in argv[2] and trains (checkpointing every step) until it is killed. Prints
// "ready <step>" once resumed and "loss <step> <loss>" after every step, one line each.
// Run with `node --import tsx` from the repository root, so @rrt/* resolve to the sources.

import { backendByName } from '@rrt/tensor';
import { crashRun } from '../src/train-crash.test-util.js';

const [dir, backendName = 'ref'] = process.argv.slice(2);
if (!dir) {
  process.stderr.write('usage: crash-child.ts <checkpoint folder> [backend]\n');
  process.exit(2);
}
const { trainer } = crashRun(backendByName(backendName), dir, (info) => {
  process.stdout.write(`loss ${info.step} ${info.loss}\n`);
});
if (!trainer.loadCheckpoint()) {
  process.stderr.write(`${dir}: no checkpoint to resume from\n`);
  process.exit(3);
}
process.stdout.write(`ready ${trainer.step}\n`);
await trainer.run();
