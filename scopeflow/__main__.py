from scopeflow.cli import app

app()
