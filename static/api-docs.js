// /api/docs: renders /api/openapi.json with the vendored Swagger UI. A file, not an inline
// script, because the Content-Security-Policy allows scripts from 'self' only.
window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  window.SwaggerUIBundle({ url: root.dataset.specUrl, domNode: root, deepLinking: true });
});
