"""Print parameters and GFLOPs of every phi as a markdown table (the README's model table)."""
import argparse

from yolo_attn.models import check_input_size
from yolo_attn.models.info import model_info_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--img-size", type=int, default=416, help="input side in pixels (default 416)")
    parser.add_argument("--num-classes", type=int, default=80, help="classes of the heads (default 80, COCO)")
    args = parser.parse_args()
    try:
        check_input_size(args.img_size, "--img-size")
    except ValueError as e:
        parser.error(str(e))
    if args.num_classes < 1:
        parser.error("--num-classes must be at least 1")
    print(model_info_table(args.img_size, args.num_classes))


if __name__ == "__main__":
    main()
