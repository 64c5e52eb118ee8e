"""Rate–distortion and throughput benchmarks for vaecodec (issue 4).

Run everything with ``python -m benchmarks --dataset DIR --out DIR``. This package lives
outside the library: ``vaecodec`` never imports it. Modules:

* ``codecs``   – baseline codec adapters (JPEG, WebP, AVIF, JPEG XL, JPEG 2000) with pinned
  options, and the vaecodec adapter;
* ``metrics``  – PSNR, MS-SSIM, bpp and the Bjøntegaard rate difference;
* ``rd``       – the rate–distortion sweep over a folder of images;
* ``reference``– CompressAI's published Kodak curves (read from ``../shared/reference``);
* ``crop``     – the side-by-side crop at one low bitrate;
* ``memory``   – peak memory of one encode or decode, measured in a subprocess;
* ``report``   – Markdown report and RD plots;
* ``test_throughput`` – pytest-benchmark throughput tests;
* ``cli``      – the one command.
"""

from __future__ import annotations
