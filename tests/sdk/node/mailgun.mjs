// Drives the official mailgun.js client against Kairos: sends one message, prints the answer
// (or the error's status and details) as JSON. usage: node mailgun.mjs <json args>
import FormData from "form-data";
import Mailgun from "mailgun.js";

const args = JSON.parse(process.argv[2]);
const mg = new Mailgun(FormData).client({ username: "api", key: args.key, url: args.url });
const data = { ...args.message };
if (args.attachment) {
  data.attachment = [{ filename: args.attachment.filename, data: Buffer.from(args.attachment.text) }];
}
try {
  const answer = await mg.messages.create(args.domain, data);
  process.stdout.write(JSON.stringify({ data: answer }));
} catch (err) {
  process.stdout.write(JSON.stringify({ error: { status: err.status, details: err.details } }));
}
