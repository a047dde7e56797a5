// Names the API reference's modules as they are imported (@rrt/tensor, @rrt/tensor/node, ...)
// instead of by their source paths (tensor/src, tensor/src/node), which typedoc derives from
// the entry points in typedoc.json.
import { Converter, ReflectionKind } from 'typedoc';

/** @param {import('typedoc').Application} app */
export function load(app) {
  app.converter.on(Converter.EVENT_CREATE_DECLARATION, (_context, reflection) => {
    if (!reflection.kindOf(ReflectionKind.Module)) return;
    const m = /^(?:packages\/)?([a-z]+)\/src(?:\/([\w-]+))?$/.exec(reflection.name);
    if (m) reflection.name = `@rrt/${m[1]}${m[2] && m[2] !== 'index' ? `/${m[2]}` : ''}`;
  });
}
