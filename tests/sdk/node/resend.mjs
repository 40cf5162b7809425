// Drives the official Resend Node SDK against Kairos: one call per run, its answer as JSON.
// usage: node resend.mjs <action> <json args>; RESEND_BASE_URL and RESEND_API_KEY set by the test.
import { Resend } from "resend";

const [action, raw] = process.argv.slice(2);
const args = JSON.parse(raw || "{}");
const resend = new Resend(process.env.RESEND_API_KEY);
const calls = {
  send: () => resend.emails.send(args.email, args.options),
  get: () => resend.emails.get(args.id),
  list: () => resend.emails.list(args.options),
  update: () => resend.emails.update({ id: args.id, scheduledAt: args.scheduledAt }),
  cancel: () => resend.emails.cancel(args.id),
  batch: () => resend.batch.send(args.emails, args.options),
};
const result = await calls[action]();
process.stdout.write(JSON.stringify({ data: result.data, error: result.error }));
