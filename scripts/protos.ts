// `npm run protos`: regenerates proto/descriptors/*.json from the .proto files (see scripts/proto-descriptors.ts).
import { writeFileSync } from 'node:fs';
import { descriptorPath, descriptorSpecs, generateDescriptor } from './proto-descriptors.js';

for (const spec of descriptorSpecs()) {
  writeFileSync(descriptorPath(spec.file), generateDescriptor(spec));
  console.log(`proto/descriptors/${spec.file} written`);
}
