"""The web storefront in a real browser: Debian's Chromium driven by Playwright, headless, against
the platform as `make dev` runs it (the shared e2e platform plus the storefront's Procfile line).

One browser for the whole file, a fresh context (cookies, storage) per shopper; every wait is on
a condition of the page, never a fixed sleep. The suite takes the screenshots the README shows
(into var/screenshots/, ignored by git). Chromium is /usr/bin/chromium (`CHROMIUM_PATH` to
change it); without it these tests fail saying how to install it, unless SKIP_BROWSER_TESTS=1.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, ROOT, Storefront
from .shop import PASSWORD, Admin, login, new_shopper, stock_of

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Without the background-networking flags, Chromium dials out at start (updates, sync), which a
# closed network refuses; QUIC and the GPU are of no use headless.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "var" / "screenshots"
DESKTOP = {"width": 1024, "height": 720}
PHONE = {"width": 390, "height": 780}
# The saga confirms in about a second; a loaded 2-core machine may take several.
SAGA_WAIT_MS = 30_000


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    if os.environ.get("SKIP_BROWSER_TESTS") == "1":
        pytest.skip("SKIP_BROWSER_TESTS=1: the browser tests were asked not to run")
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - one stat before anything starts
        pytest.fail(
            f"Chromium is not at {CHROMIUM}: install it (`apt-get install -y chromium`) or set "
            "CHROMIUM_PATH; SKIP_BROWSER_TESTS=1 skips the browser tests on purpose",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        await browser.close()


class Shop:
    """One shopper's browser: a context of its own, its pages' CSP violations recorded."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.context = context
        self.page = page
        self.violations: list[str] = []
        page.on("console", self._console)
        page.on("dialog", self._dialog)

    def _console(self, message: object) -> None:
        text = getattr(message, "text", "")
        if "Content Security Policy" in text or "Refused to" in text:
            self.violations.append(text)

    def _dialog(self, dialog: object) -> None:
        self.violations.append(f"a dialog opened: {getattr(dialog, 'message', '')}")

    async def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))

    async def register(self, name: str = "Ada Shopper") -> str:
        email = f"browser-{uuid.uuid4().hex[:10]}@example.com"
        page = self.page
        await page.goto("/register")
        await page.get_by_label("Full name").fill(name)
        await page.get_by_label("Email").fill(email)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Create account").click()
        await expect(page.locator(".notice")).to_contain_text("Your account is ready")
        return email

    async def log_in(self, email: str, password: str) -> None:
        await self.page.goto("/login")
        await self.page.get_by_label("Email").fill(email)
        await self.page.get_by_label("Password").fill(password)
        await self.page.get_by_role("button", name="Log in").click()

    async def search(self, words: str) -> None:
        await self.page.goto("/")
        await self.page.get_by_label("Search products").fill(words)
        await self.page.get_by_label("Search products").press("Enter")
        await expect(self.page.locator("h1")).to_contain_text(words)

    async def add_to_cart(self, product_name: str, quantity: int) -> None:
        await self.page.get_by_role("link", name=product_name).click()
        await self.page.get_by_label("Quantity").fill(str(quantity))
        await self.page.get_by_role("button", name="Add to cart").click()
        await expect(self.page.locator(".notice")).to_contain_text(
            f"Added {quantity} \N{MULTIPLICATION SIGN} "
        )

    async def check_out(self, card: str = "Test card: approved") -> None:
        await self.page.goto("/cart")
        await self.page.get_by_label(card, exact=True).check()
        await self.page.get_by_role("button", name=re.compile("Place order")).click()
        await expect(self.page).to_have_url(re.compile(r"/orders/[0-9a-f-]{36}$"))

    async def final_status(self, expected: str) -> None:
        status = self.page.locator("#order-status .status")
        await expect(status).to_have_text(expected, timeout=SAGA_WAIT_MS)


@pytest.fixture
async def browse(chromium: Browser, storefront: Storefront) -> AsyncIterator[type[Shop]]:
    """Factory of shoppers; each is checked for CSP violations and dialogs at the end."""
    shops: list[Shop] = []

    class Opened(Shop):
        @classmethod
        async def open(cls, *, javascript: bool = True, viewport: dict[str, int] = DESKTOP) -> Shop:
            context = await chromium.new_context(
                base_url=storefront.url, java_script_enabled=javascript, viewport=viewport
            )
            shop = cls(context, await context.new_page())
            shops.append(shop)
            return shop

    yield Opened
    for shop in shops:
        await shop.context.close()
    assert [v for shop in shops for v in shop.violations] == []


@pytest.fixture
async def api(storefront: Storefront) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=storefront.platform.base_url, timeout=30) as client:
        yield client


@pytest.fixture
async def admin(api: httpx.AsyncClient) -> Admin:
    return Admin(api, await login(api, ADMIN_EMAIL, ADMIN_PASSWORD))


async def named_product(
    api: httpx.AsyncClient, admin: Admin, name: str, *, stock: int, price_cents: int
) -> dict[str, str]:
    product = await admin.create_product(stock=stock, price_cents=price_cents)
    patched = await api.patch(
        f"/api/v1/products/{product['id']}",
        headers=admin.headers,
        json={"name": name, "description": f"{name}: made for the browser journeys."},
    )
    assert patched.status_code == 200, patched.text
    return dict(patched.json())


async def test_a_shopper_registers_searches_buys_two_products_and_sees_the_order_confirmed(
    browse: type[Shop], api: httpx.AsyncClient, admin: Admin
) -> None:
    lamp = await named_product(api, admin, "Aurora walnut desk lamp", stock=6, price_cents=4900)
    mug = await named_product(api, admin, "Aurora stoneware mug", stock=9, price_cents=1450)
    await named_product(api, admin, "Aurora linen throw", stock=2, price_cents=6800)
    shop = await browse.open()
    page = shop.page
    await shop.register()

    await shop.search("Aurora")
    await expect(page.locator(".product-card")).to_have_count(3)
    await shop.shot("catalogue")
    await shop.add_to_cart(lamp["name"], 1)
    await shop.search("Aurora")
    await page.get_by_role("link", name=mug["name"]).click()
    await shop.shot("product")
    await page.get_by_label("Quantity").fill("2")
    await page.get_by_role("button", name="Add to cart").click()
    # Change a quantity: three mugs.
    await page.get_by_label(f"Quantity of {mug['name']}").fill("3")
    await page.get_by_role("button", name=f"Update {mug['name']}").click()
    await expect(page.locator(".notice")).to_have_text("Your cart was updated.")
    await expect(page.locator("tfoot .total")).to_have_text("$92.50")  # 49.00 + 3 x 14.50
    await shop.shot("cart")

    await shop.check_out()
    order_id = page.url.rsplit("/", 1)[1]
    await shop.final_status("Confirmed")
    await expect(page.locator("#order-status")).to_contain_text("Your order is confirmed")
    await shop.shot("order-confirmed")

    await page.get_by_role("link", name="Orders", exact=True).click()
    row = page.get_by_role("row").filter(has_text=f"Order {order_id[:8]}")
    await expect(row).to_contain_text("Confirmed")
    await expect(row).to_contain_text("$92.50")
    # The ordered lines leave the cart once the order is confirmed (an event later).
    await page.goto("/cart")
    for _ in range(50):
        if await page.get_by_text("Your cart is empty").count():
            break
        await page.reload()
    await expect(page.get_by_text("Your cart is empty")).to_be_visible()


async def test_the_last_unit_bought_by_another_shopper_first_cancels_the_order_out_of_stock(
    browse: type[Shop], api: httpx.AsyncClient, admin: Admin
) -> None:
    word = uuid.uuid4().hex[:6]
    last = await named_product(api, admin, f"Last ceramic vase {word}", stock=1, price_cents=3900)
    shop = await browse.open()
    await shop.register()
    await shop.search(word)
    await shop.add_to_cart(last["name"], 1)
    # Someone else buys the last one first.
    other = await new_shopper(api)
    await other.add(last["id"], 1)
    assert (await other.final_order((await other.checkout_order())["id"]))["status"] == "CONFIRMED"

    await shop.check_out()
    await shop.final_status("Cancelled")
    await expect(shop.page.locator("#order-status .reason")).to_have_text(
        "Cancelled because part of the order was out of stock. You were not charged."
    )
    await expect(shop.page.get_by_role("button", name="Cancel this order")).to_have_count(0)


async def test_a_declined_card_cancels_the_order_and_the_shopper_pays_with_another(
    browse: type[Shop], api: httpx.AsyncClient, admin: Admin
) -> None:
    word = uuid.uuid4().hex[:6]
    lamp = await named_product(api, admin, f"Brass lamp {word}", stock=3, price_cents=5400)
    shop = await browse.open()
    await shop.register()
    await shop.search(word)
    await shop.add_to_cart(lamp["name"], 1)

    await shop.check_out("Test card: declined")
    await shop.final_status("Cancelled")
    await expect(shop.page.locator("#order-status .reason")).to_have_text(
        "Your payment was declined. Nothing was charged."
    )
    # The lamp is still in the cart: the shopper pays with the other card.
    await shop.check_out("Test card: approved")
    await shop.final_status("Confirmed")


async def test_cancelling_a_confirmed_order_puts_its_stock_back(
    browse: type[Shop], api: httpx.AsyncClient, admin: Admin
) -> None:
    word = uuid.uuid4().hex[:6]
    chair = await named_product(api, admin, f"Oak chair {word}", stock=4, price_cents=12000)
    shop = await browse.open()
    page = shop.page
    await shop.register()
    await shop.search(word)
    await shop.add_to_cart(chair["name"], 3)
    await shop.check_out()
    await shop.final_status("Confirmed")
    assert await stock_of(api, chair["id"]) == 1

    await page.get_by_role("button", name="Cancel this order").click()
    await expect(page.locator(".notice")).to_contain_text("Your order was cancelled")
    await expect(page.locator("#order-status .reason")).to_have_text("You cancelled this order.")
    # The stock is back, as the product page shows (the gateway caches a product for 1 s).
    await page.goto(f"/products/{chair['id']}")
    for _ in range(50):
        if await page.get_by_text("(4 available)").count():
            break
        await page.reload()
    await expect(page.locator(".stock")).to_have_text("Only 4 left (4 available)")


async def test_a_wrong_password_is_said_in_words_then_the_right_one_signs_in_by_keyboard(
    browse: type[Shop],
) -> None:
    first = await browse.open()
    email = await first.register("Grace Keyboard")
    shop = await browse.open()
    page = shop.page
    await shop.log_in(email, "not my password")
    await expect(page.get_by_role("alert")).to_have_text(
        "That email and password do not match an account. Check them and try again."
    )
    await expect(page.get_by_label("Email")).to_have_value(email)
    # The right one, by keyboard only: every input is reachable with Tab.
    for _ in range(20):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "f-password":
            break
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.locator(".notice")).to_have_text("Welcome back, Grace Keyboard.")
    await expect(page.get_by_role("button", name="Log out")).to_be_visible()


async def test_an_admin_adds_a_product_that_a_shopper_then_finds_by_search(
    browse: type[Shop],
) -> None:
    word = uuid.uuid4().hex[:6]
    admin = await browse.open()
    page = admin.page
    await admin.log_in(ADMIN_EMAIL, ADMIN_PASSWORD)
    await page.get_by_role("link", name="New product").click()
    await page.get_by_label("SKU").fill(f"BROWSER-{word}")
    await page.get_by_label("Name").fill(f"Copper kettle {word}")
    await page.get_by_label("Description").fill("Whistles when the water boils.")
    await page.get_by_label("Price (USD)").fill("not a price")
    await page.get_by_label("Units in stock").fill("7")
    await page.get_by_role("button", name="Add to the catalogue").click()
    # A mistake is said next to its field, and nothing typed is lost.
    await expect(page.locator("#f-price-error")).to_have_text("Enter a price like 12.50.")
    await expect(page.get_by_label("Name")).to_have_value(f"Copper kettle {word}")
    await page.get_by_label("Price (USD)").fill("34.90")
    await page.get_by_role("button", name="Add to the catalogue").click()
    await expect(page.locator(".notice")).to_have_text(
        f"Copper kettle {word} was added to the catalogue."
    )
    await expect(page.locator(".price")).to_have_text("$34.90")

    shopper = await browse.open()
    await shopper.search(word)
    await expect(shopper.page.locator(".product-card")).to_have_count(1)
    await expect(shopper.page.locator(".product-card")).to_contain_text("$34.90")


async def test_a_product_named_like_a_script_renders_as_text(
    browse: type[Shop], api: httpx.AsyncClient, admin: Admin
) -> None:
    name = "<script>alert(1)</script>"
    product = await named_product(api, admin, name, stock=1, price_cents=100)
    shop = await browse.open()
    await shop.page.goto(f"/products/{product['id']}")
    await expect(shop.page.locator("h1")).to_have_text(name)
    await shop.search("<script>")
    await expect(shop.page.get_by_role("link", name=name)).to_be_visible()
    # The `browse` fixture fails the test had any dialog opened.


async def test_without_javascript_a_shopper_still_browses_buys_and_sees_the_status(
    browse: type[Shop], api: httpx.AsyncClient, admin: Admin
) -> None:
    word = uuid.uuid4().hex[:6]
    scarf = await named_product(api, admin, f"Wool scarf {word}", stock=3, price_cents=2500)
    shop = await browse.open(javascript=False)
    await shop.register()
    await shop.search(word)
    await shop.add_to_cart(scarf["name"], 2)
    await shop.check_out()
    # No script: the page reloads itself while the order is being confirmed.
    await shop.final_status("Confirmed")


async def test_the_catalogue_reads_on_a_phone_width_screen(
    browse: type[Shop], api: httpx.AsyncClient, admin: Admin
) -> None:
    await named_product(api, admin, "Aurora phone-width tote bag", stock=8, price_cents=2200)
    shop = await browse.open(viewport=PHONE)
    await shop.search("Aurora")
    await expect(shop.page.locator(".product-card").first).to_be_visible()
    # Nothing wider than the screen: no sideways scrolling.
    overflow = await shop.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    await shop.shot("catalogue-phone")
