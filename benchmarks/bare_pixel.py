"""The bare endpoint the tracking benchmark compares against: Starlette answering the same GIF, recording nothing.

    uvicorn benchmarks.bare_pixel:app
"""

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from digest.web.tracking import PIXEL, PIXEL_HEADERS


async def pixel(request):
    return Response(PIXEL, media_type="image/gif", headers=PIXEL_HEADERS)


app = Starlette(routes=[Route("/o/{token}.gif", pixel)])
