"""The web app's routers: the JSON API and the server-rendered pages."""
