"""Four tests of the app, each in a fresh browser context, through the session's proxy."""
import os

import pytest
from playwright.sync_api import expect


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_the_app_runs(page, n):
    page.goto(os.environ["APP_URL"])
    expect(page.locator("#result")).not_to_have_text("loading", timeout=60_000)
    expect(page.locator("#result")).to_have_text("ok v1")
