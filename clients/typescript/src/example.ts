/**
 * A tour of the CRM leads API through its generated types: log in, create leads, page through a
 * filtered list by cursor, change a lead, read the statistics, and read a 422 field by field.
 *
 * Every call is checked, and the process exits non-zero at the first answer that is not the one
 * the API promises, so CI can run it as a test of the contract.
 *
 *   CRM_API_URL   default http://127.0.0.1:8000
 *   CRM_EMAIL     default admin@example.com
 *   CRM_PASSWORD  required
 */
import createClient, { type Middleware } from "openapi-fetch";

import type { components, paths } from "./schema.js";

type ErrorResponse = components["schemas"]["ErrorResponse"];

const baseUrl = process.env.CRM_API_URL ?? "http://127.0.0.1:8000";
const email = process.env.CRM_EMAIL ?? "admin@example.com";
const password = process.env.CRM_PASSWORD;

class StepFailed extends Error {}

function expect(condition: boolean, message: string): asserts condition {
  if (!condition) throw new StepFailed(message);
}

/** The API's own words for a failed call: its status, `code` and `detail`. */
function describe(response: Response, error: ErrorResponse | undefined): string {
  return error ? `${response.status} ${error.code}: ${error.detail}` : `${response.status}`;
}

async function main(): Promise<void> {
  expect(password !== undefined && password !== "", "set CRM_PASSWORD (and CRM_EMAIL, CRM_API_URL)");
  const client = createClient<paths>({ baseUrl });

  // 1. Log in. The token endpoint is an OAuth2 password form: url-encoded, username = email.
  const login = await client.POST("/api/v1/auth/token", {
    body: { username: email, password },
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
  });
  expect(login.data !== undefined, `login failed: ${describe(login.response, login.error)}`);
  const token = login.data.access_token;
  const bearer: Middleware = {
    onRequest({ request }) {
      request.headers.set("Authorization", `Bearer ${token}`);
      return request;
    },
  };
  client.use(bearer);
  console.log(`logged in as ${email} (token valid for ${login.data.expires_in} s)`);

  // 2. Create three leads sharing a marker, so the list below finds exactly these on any database.
  const marker = `tsclient${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  const created: number[] = [];
  for (const first_name of ["Ada", "Grace", "Edsger"]) {
    const { data, error, response } = await client.POST("/api/v1/leads", {
      body: {
        first_name,
        last_name: marker,
        email: `${first_name.toLowerCase()}.${marker}@example.org`,
        company: "Example Client Ltd",
        source: "WEBSITE",
        tags: ["typescript-example"],
      },
    });
    expect(data !== undefined, `creating a lead failed: ${describe(response, error)}`);
    expect(response.status === 201, `creating a lead answered ${response.status}, not 201`);
    expect(data.status === "NEW", `a new lead has status ${data.status}, not NEW`);
    created.push(data.id);
    console.log(`created lead ${data.id} (${data.first_name} ${data.last_name}), score ${data.lead_score}`);
  }

  // 3. List with two filters, two per page, and follow next_cursor to the second page.
  const query = { search: marker, source: ["WEBSITE" as const], limit: 2 };
  const first = await client.GET("/api/v1/leads", { params: { query } });
  expect(first.data !== undefined, `listing leads failed: ${describe(first.response, first.error)}`);
  expect(first.data.total === 3, `the filtered list counts ${first.data.total} leads, not 3`);
  expect(first.data.items.length === 2, `the first page has ${first.data.items.length} leads, not 2`);
  const cursor = first.data.next_cursor;
  expect(typeof cursor === "string", "the first page of three leads has no next_cursor");
  const second = await client.GET("/api/v1/leads", { params: { query: { ...query, cursor } } });
  expect(second.data !== undefined, `the second page failed: ${describe(second.response, second.error)}`);
  expect(second.data.items.length === 1, `the second page has ${second.data.items.length} leads, not 1`);
  expect(second.data.next_cursor === null, "the last page still has a next_cursor");
  const listed = [...first.data.items, ...second.data.items].map((lead) => lead.id);
  expect(
    [...listed].sort((a, b) => a - b).join() === [...created].sort((a, b) => a - b).join(),
    `the two pages list leads ${listed.join(", ")}, not the ones created (${created.join(", ")})`,
  );
  console.log(`listed ${listed.join(", ")} over two pages (search + source, cursor)`);

  // 4. Change a lead: only the fields sent are changed.
  const leadId = created[0];
  expect(leadId !== undefined, "no lead was created");
  const updated = await client.PATCH("/api/v1/leads/{lead_id}", {
    params: { path: { lead_id: leadId } },
    body: { status: "QUALIFIED", job_title: "CTO" },
  });
  expect(updated.data !== undefined, `updating lead ${leadId} failed: ${describe(updated.response, updated.error)}`);
  expect(
    updated.data.status === "QUALIFIED" && updated.data.job_title === "CTO",
    `lead ${leadId} reads status ${updated.data.status}, job title ${updated.data.job_title} after the update`,
  );
  expect(updated.data.company === "Example Client Ltd", "a field not sent in the PATCH changed");
  console.log(`lead ${leadId} is now ${updated.data.status}, job title ${updated.data.job_title}`);

  // 5. Statistics over every lead the caller may see.
  const stats = await client.GET("/api/v1/leads/statistics");
  expect(stats.data !== undefined, `statistics failed: ${describe(stats.response, stats.error)}`);
  const qualified = stats.data.leads_by_status["QUALIFIED"] ?? 0;
  const fromWebsite = stats.data.leads_by_source["WEBSITE"] ?? 0;
  expect(stats.data.total_leads >= 3, `statistics count ${stats.data.total_leads} leads, fewer than created`);
  expect(qualified >= 1, "statistics count no QUALIFIED lead after the update");
  expect(fromWebsite >= 3, `statistics count ${fromWebsite} WEBSITE leads, fewer than created`);
  console.log(
    `statistics: ${stats.data.total_leads} leads, ${qualified} qualified, ${fromWebsite} from the website, ` +
      `average score ${stats.data.average_lead_score}`,
  );

  // 6. A refused lead: a 422 names each wrong field in errors[].loc.
  const refused = await client.POST("/api/v1/leads", {
    body: { first_name: "Bad", last_name: marker, email: "not-an-email" },
  });
  expect(refused.data === undefined, `a lead with an invalid email was accepted (${refused.response.status})`);
  expect(refused.response.status === 422, `an invalid email answered ${refused.response.status}, not 422`);
  const problems = refused.error?.errors ?? [];
  for (const problem of problems) {
    console.log(`refused as expected: ${problem.loc.join(".")}: ${problem.msg}`);
  }
  expect(
    problems.some((problem) => problem.loc.join(".") === "body.email"),
    `the 422 does not name body.email: ${JSON.stringify(refused.error)}`,
  );

  console.log("all steps behaved as documented");
}

main().catch((reason: unknown) => {
  console.error(reason instanceof StepFailed ? `FAILED: ${reason.message}` : reason);
  process.exitCode = 1;
});
