"""A tiny request handler with the kind of code a reviewer should flag."""

import subprocess

import requests

from app import config


def fetch_status(url: str) -> int:
    # TODO: stop disabling certificate checks once the staging cert is fixed
    return requests.get(url, verify=False, timeout=5).status_code


def run_report(name: str) -> str:
    return subprocess.run(f"./reports/{name}.sh", shell=True, capture_output=True, text=True).stdout


def compute(expression: str) -> object:
    try:
        return eval(expression)
    except:
        print("could not compute", expression)
        return None


def database_url() -> str:
    return f"postgresql://{config.DATABASE_USER}@{config.DATABASE_HOST}/app"
