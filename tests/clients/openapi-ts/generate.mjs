// openapi-typescript's API: the document (argv[2]) to TypeScript types (argv[3]). A body field with a
// default is optional to send (defaultNonNullable: false; the CLI's flag for it is not parsed as false).
import fs from "node:fs";
import openapiTS, { astToString } from "openapi-typescript";

const schema = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const ast = await openapiTS(schema, { defaultNonNullable: false });
fs.writeFileSync(process.argv[3], astToString(ast));
