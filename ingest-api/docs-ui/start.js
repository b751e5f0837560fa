// Swagger UI on the API's own OpenAPI document; "Authorize" takes a bearer token from
// POST /v1/auth/login (or `sluice token`), and "Try it out" calls this origin.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  displayRequestDuration: true,
});
