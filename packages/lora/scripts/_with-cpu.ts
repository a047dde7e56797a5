// Scratch (not committed): registers the in-progress cpu backend, then runs the script named in argv.
import { registerBackend, setBackend } from '@rrt/tensor';
import { createCpuBackend } from '../../tensor/src/backends/cpu/index.ts';
registerBackend('cpu', () => createCpuBackend());
setBackend('cpu');
const script = process.argv[2];
process.argv.splice(2, 1);
await import(script);
