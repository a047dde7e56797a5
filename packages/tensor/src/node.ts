// @rrt/tensor/node: the parts that need Node's file system (streaming checkpoint IO).
export { SafetensorsFile, writeSafetensorsFile } from './safetensors-node.js';
