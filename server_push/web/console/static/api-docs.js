// The API docs page (server_push/web/api_docs.py): Swagger UI on the OpenAPI
// document, its "Try it out" requests riding on the console session with the
// session's CSRF token, as the console's own calls do.

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const url = document.querySelector('meta[name="openapi-url"]')?.content;

window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url,
    dom_id: "#swagger-ui",
    deepLinking: true,
    requestInterceptor: (request) => {
      if (request.method && request.method.toUpperCase() !== "GET") {
        request.headers["X-CSRF-Token"] = csrf;
      }
      return request;
    },
  });
});
