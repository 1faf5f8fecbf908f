"""Reading odd and bad inputs, and writing indexed PNGs that read back identically."""


import numpy as np
import pytest
import skimage.data
from PIL import Image

from cq.imageio import ImageError, load_image, write_indexed_png
from cq.pipeline import Job, quantize_file
from cq.record import read_record


@pytest.fixture
def photo():
    return skimage.data.coffee()[100:160, 200:280]


def save(path, image, **kw):
    image.save(path, **kw)
    return path


def test_zero_byte_file_names_the_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: empty file"):
        load_image(p)


def test_text_named_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("hello, I am not a picture\n")
    with pytest.raises(ImageError, match=r"notes\.png: not an image"):
        load_image(p)


def test_truncated_png(tmp_path, photo):
    full = save(tmp_path / "full.png", Image.fromarray(photo))
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageError, match=r"cut\.png: unreadable or corrupt"):
        load_image(cut)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"nowhere\.png"):
        load_image(tmp_path / "nowhere.png")


def test_16bit_png_is_scaled_to_8_bits(tmp_path):
    values = np.array([[0, 257 * 100], [257 * 200, 65535]], dtype=np.uint16)
    p = save(tmp_path / "deep.png", Image.fromarray(values))
    loaded = load_image(p)
    assert loaded.pixels[..., 0].tolist() == [[0, 100], [200, 255]]
    assert any("scaled to 8 bits" in n for n in loaded.notes)


def test_cmyk_jpeg(tmp_path, photo):
    p = save(tmp_path / "print.jpg", Image.fromarray(photo).convert("CMYK"), quality=95)
    loaded = load_image(p)
    assert loaded.pixels.shape == photo.shape and loaded.pixels.dtype == np.uint8
    assert np.abs(loaded.pixels.astype(int) - photo).mean() < 12


def test_rgba_is_composited_over_the_background(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # one opaque red pixel, the rest fully transparent
    p = save(tmp_path / "alpha.png", Image.fromarray(rgba, "RGBA"))
    assert load_image(p).pixels[0, 0].tolist() == [200, 0, 0]
    assert load_image(p).pixels[1, 1].tolist() == [255, 255, 255]
    assert load_image(p, background=(0, 0, 0)).pixels[1, 1].tolist() == [0, 0, 0]
    with pytest.raises(ImageError, match="transparency"):
        load_image(p, background=None)


def test_palette_png_with_transparency(tmp_path):
    im = Image.new("P", (3, 1))
    im.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    im.putdata([0, 1, 1])
    im.info["transparency"] = 0
    p = save(tmp_path / "pal.png", im, transparency=0)
    assert load_image(p).pixels[0].tolist() == [[255, 255, 255], [40, 50, 60], [40, 50, 60]]


def test_grayscale(tmp_path, photo):
    gray = Image.fromarray(photo).convert("L")
    pixels = load_image(save(tmp_path / "gray.png", gray)).pixels
    assert pixels.shape == photo.shape
    assert np.array_equal(pixels[..., 0], np.asarray(gray)) and np.array_equal(pixels[..., 0], pixels[..., 2])


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    loaded = load_image(p)
    assert loaded.pixels[0, 0].tolist() == [255, 0, 0]
    assert "animated: first frame of 3 used" in loaded.notes


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (4, 2), (0, 0, 0))
    im.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = save(tmp_path / "rot.jpg", im, exif=exif, quality=100, subsampling=0)  # 4:4:4 keeps one red pixel red
    pixels = load_image(p).pixels.astype(int)
    assert pixels.shape[:2] == (4, 2)
    # Turned clockwise, the top-left corner goes to the top right: the red pixel is there, and
    # nowhere else (a rotation the other way, or a flip, would put it in another corner).
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 100)
    assert red[0, 1] and red.sum() == 1, red


def test_a_preview_decodes_a_jpeg_smaller_and_keeps_its_orientation(tmp_path):
    """``preview`` (thumbnails only) lets libjpeg decode at a reduced scale, never below the
    asked size, turned as EXIF says; other formats and method reads keep every pixel."""
    photo = Image.fromarray(skimage.data.astronaut())  # 512 x 512
    wide = photo.resize((2048, 1024))
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = save(tmp_path / "wide.jpg", wide, exif=exif, quality=95)
    png = save(tmp_path / "wide.png", wide)
    assert load_image(jpeg).pixels.shape == (2048, 1024, 3)
    small = load_image(jpeg, preview=300).pixels
    assert small.shape == (1024, 512, 3)  # 1/2: 1/4 would make the short side 256 < 300
    assert load_image(png, preview=300).pixels.shape == (1024, 2048, 3)  # no EXIF: not turned
    full = np.asarray(Image.fromarray(load_image(jpeg).pixels).resize((512, 1024), Image.Resampling.BOX), float)
    assert np.abs(full - small).mean() < 3  # the same picture, not a crop or a turned one


def test_decompression_bomb_is_refused(tmp_path):
    p = save(tmp_path / "bomb.png", Image.new("RGB", (200, 200)))
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(p, max_pixels=10_000)
    # More than twice the limit: Pillow's own message names twice the limit; ours the limit.
    with pytest.raises(ImageError, match=r"\(40,000 pixels, over the limit of 1,000 pixels, read.max_pixels\)"):
        load_image(p, max_pixels=1_000)
    assert load_image(p, max_pixels=40_000).pixels.shape == (200, 200, 3)


def test_indexed_png_reads_back_identically(tmp_path):
    rng = np.random.default_rng(1)
    palette = rng.integers(0, 256, (37, 3), dtype=np.uint8)
    index = rng.integers(0, 37, (9, 13))
    out = tmp_path / "q.png"
    write_indexed_png(out, palette, index)
    with Image.open(out) as im:
        assert im.mode == "P"
        back = np.asarray(im.convert("RGB"))
    assert np.array_equal(back, palette[index])


# --- the same inputs through the whole pipeline: a result or a clear error record ---------
def run(tmp_path, src, method="median_cut"):
    png, js = tmp_path / "out" / "r.png", tmp_path / "out" / "r.json"
    record = quantize_file(src, png, js, Job(method=method))
    assert read_record(js) == record
    return record, png


@pytest.mark.parametrize("content", [b"", b"plain text, not a picture", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_bad_files_give_an_error_record_and_no_png(tmp_path, content):
    src = tmp_path / "bad.png"
    src.write_bytes(content)
    record, png = run(tmp_path, src)
    assert record["status"] == "error" and "bad.png" in record["error"]
    assert "\n" not in record["error"]
    assert not png.exists()


def test_images_with_fewer_than_k_pixels_are_an_error_naming_the_file(tmp_path):
    src = save(tmp_path / "one.png", Image.fromarray(np.full((1, 1, 3), 7, np.uint8)))
    record, png = run(tmp_path, src)
    assert record["status"] == "error" and "one.png" in record["error"]
    assert "1 pixel, fewer than the k=37" in record["error"] and not png.exists()


def test_five_colour_images_get_exactly_k_colours(tmp_path):
    image = np.repeat(np.arange(5, dtype=np.uint8) * 50, 3).reshape(1, 5, 3).repeat(8, axis=0)
    src = save(tmp_path / "five.png", Image.fromarray(image))
    record, png = run(tmp_path, src)
    written = np.asarray(Image.open(png).convert("RGB"))
    assert record["status"] == "ok" and record["n_colors"] == 37
    assert len(np.unique(written.reshape(-1, 3), axis=0)) == 37
    assert any("5 distinct colours, fewer than k=37" in n for n in record["notes"])


def test_unicode_and_spaces_in_names(tmp_path, photo):
    folder = tmp_path / "Fotos de ÉTÉ"
    folder.mkdir()
    src = save(folder / "café au lait ü.png", Image.fromarray(photo))
    record, png = run(tmp_path, src)
    assert record["status"] == "ok" and record["image"]["path"] == str(src)
    assert len(np.unique(np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3), axis=0)) == 37


def test_output_never_overwrites_the_input(tmp_path, photo):
    src = save(tmp_path / "in.png", Image.fromarray(photo))
    before = src.read_bytes()
    record = quantize_file(src, src, None, Job(method="octree"))
    assert record["status"] == "error" and "over the input" in record["error"]
    assert src.read_bytes() == before
