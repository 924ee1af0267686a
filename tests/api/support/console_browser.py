"""Drives the console in headless Chromium (Debian's chromium and chromium-driver) with Selenium, as a
person would: signs in with a token, finds a message by its recipient, opens it, cancels it. Keeps a
screenshot of each page in the artifacts directory and prints one JSON line of what it saw.

    console_browser.py BASE_URL TOKEN RECIPIENT SUBJECT ARTIFACTS_DIR
"""

import json
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait


def main() -> int:
    base, token, recipient, subject, artifacts = sys.argv[1:6]
    os.makedirs(artifacts, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("POSTHORN_TEST_CHROMIUM", "/usr/bin/chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    service = Service(os.environ.get("POSTHORN_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    seen = {}
    wait = WebDriverWait(driver, 15)
    try:
        driver.get(base + "/console")
        wait.until(ec.presence_of_element_located((By.NAME, "token")))
        seen["redirected_to_login"] = driver.current_url.endswith("/console/login")
        driver.save_screenshot(os.path.join(artifacts, "1-login.png"))

        driver.find_element(By.NAME, "token").send_keys(token)
        form = driver.find_element(By.CSS_SELECTOR, "form.login")
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait.until(ec.staleness_of(form))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.list")))
        seen["token_in_url"] = token in driver.current_url
        seen["token_in_page"] = token in driver.page_source
        seen["cookie_http_only"] = all(c.get("httpOnly") for c in driver.get_cookies())
        seen["cookie_visible_to_script"] = driver.execute_script("return document.cookie") != ""
        driver.save_screenshot(os.path.join(artifacts, "2-messages.png"))

        field = driver.find_element(By.NAME, "recipient")
        field.clear()
        field.send_keys(recipient)
        listing = driver.find_element(By.CSS_SELECTOR, "table.list")
        driver.find_element(By.CSS_SELECTOR, "form.filters button").click()
        wait.until(ec.staleness_of(listing))
        link = wait.until(ec.element_to_be_clickable((By.LINK_TEXT, subject)))
        seen["rows_after_filter"] = len(driver.find_elements(By.CSS_SELECTOR, "table.list tbody tr"))
        driver.save_screenshot(os.path.join(artifacts, "3-filtered.png"))

        rows = driver.find_element(By.CSS_SELECTOR, "table.list")
        link.click()
        wait.until(ec.staleness_of(rows))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "dl.envelope")))
        seen["detail_shows_recipient"] = recipient in driver.page_source
        frame = driver.find_element(By.CSS_SELECTOR, "iframe.preview")
        seen["preview_sandboxed"] = frame.get_attribute("sandbox") is not None
        driver.switch_to.frame(frame)
        seen["preview_text"] = driver.find_element(By.TAG_NAME, "body").text[:200]
        driver.switch_to.default_content()
        driver.save_screenshot(os.path.join(artifacts, "4-message.png"))

        envelope = driver.find_element(By.CSS_SELECTOR, "dl.envelope")
        driver.find_element(By.CSS_SELECTOR, "form[action$='/cancel'] button").click()
        wait.until(ec.staleness_of(envelope))
        notice = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "p.notice")))
        seen["notice"] = notice.text
        seen["status_after"] = driver.find_element(By.CSS_SELECTOR, "dl.envelope .status").text
        driver.save_screenshot(os.path.join(artifacts, "5-cancelled.png"))

        driver.get(base + "/console/queue")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "svg.chart")))
        driver.save_screenshot(os.path.join(artifacts, "6-queue.png"))
        seen["console_errors"] = [
            entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"
        ]
    except Exception as error:  # noqa: BLE001 - report what was seen so far, then fail
        driver.save_screenshot(os.path.join(artifacts, "failure.png"))
        seen["error"] = f"{type(error).__name__}: {error}"
        print(json.dumps(seen))
        return 1
    finally:
        driver.quit()
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
