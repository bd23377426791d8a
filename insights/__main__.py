from insights.cli.main import run

run()
