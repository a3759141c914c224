import tidings_client
import tidings_client.testing


def test_all_is_sorted_and_complete():
    assert tidings_client.__all__ == sorted(tidings_client.__all__)
    for name in tidings_client.__all__:
        assert hasattr(tidings_client, name), name


def test_public_names_do_not_leak_private_modules():
    public = {n for n in dir(tidings_client) if not n.startswith("_")}
    assert public <= set(tidings_client.__all__) | {"testing"}


def test_public_classes_read_as_top_level():
    assert tidings_client.Client.__module__ == "tidings_client"
    assert repr(tidings_client.ValidationError).endswith("tidings_client.ValidationError'>")


def test_testing_module_all_is_sorted():
    assert tidings_client.testing.__all__ == sorted(tidings_client.testing.__all__)


def test_every_error_is_a_tidings_error():
    for name in tidings_client.__all__:
        obj = getattr(tidings_client, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, tidings_client.TidingsError), name


def test_typed_marker_is_shipped():
    import importlib.resources

    assert importlib.resources.files("tidings_client").joinpath("py.typed").is_file()
