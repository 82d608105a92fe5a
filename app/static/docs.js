// Swagger UI for /docs, from the vendored bundle: the bedside network has no CDN.
window.addEventListener("DOMContentLoaded", () => {
  window.SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
});
