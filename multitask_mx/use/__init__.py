"""Using a trained model: inference, reports, the HTTP server."""
